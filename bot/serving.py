"""The app factory for an external process manager: gunicorn with aiohttp's worker.

    gunicorn bot.serving:app --worker-class aiohttp.GunicornWebWorker --workers 4 --bind :8080

Each gunicorn worker awaits ``app()`` once: the settings come from the environment as for
``surveybot serve``, the runtime migrates under the advisory lock (one worker does the work,
the others find the schema at head), and the background loops start with the app; the
singleton loops take their leases, so periodic work still runs once across the workers.
"""

from __future__ import annotations

from aiohttp import web

from bot.app import create_app
from bot.runtime import Runtime
from settings import load_settings


async def app() -> web.Application:
    return create_app(await Runtime.create(load_settings()))
