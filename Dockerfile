# The service image used by docker-compose.yml (not built in CI: no Docker engine there).
FROM python:3.11-slim
WORKDIR /app
# DejaVu Sans (every Vietnamese letter) is embedded in the periodic reports' PDF.
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md settings.py babel.cfg ./
COPY bot ./bot
COPY storage ./storage
RUN pip install --no-cache-dir '.[gunicorn]' && useradd --system surveybot
USER surveybot
ENV SURVEYBOT_ENV=production SURVEYBOT_HOST=0.0.0.0 SURVEYBOT_PORT=8080
EXPOSE 8080
HEALTHCHECK CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
CMD ["surveybot", "serve", "--workers", "2"]
