"""All configuration, read once from ``SURVEYBOT_*`` environment variables or a ``.env`` file.

Every threshold the regulation sets lives here rather than in code, because the rules change
(Decree 118/2025 replaced Decree 61/2018) and an agency must be able to follow a new circular
without a release.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(RuntimeError):
    """Raised with one readable line per bad value, so start-up fails with a message, not a trace."""


class Settings(BaseSettings):
    """The service configuration; see README for the environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="SURVEYBOT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["development", "production", "test"] = "development"
    var_dir: Path = Path("./var")
    database_url: str = ""
    redis_url: str | None = None
    redis_prefix: str = "surveybot:"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_base_url: str = ""
    log_level: str = "INFO"

    # Keys: a JSON document {"<purpose>": [{"id": "...", "key": "<base64>"}, ...]}, active key first.
    keys: str | None = None
    keys_file: Path | None = None

    default_language: Literal["vi", "en"] = "vi"
    default_survey: str = "mot-cua"
    survey_ttl_hours: int = Field(7 * 24, ge=1)
    reminder_after_hours: int = Field(24, ge=1)
    rating_token_ttl_days: int = Field(60, ge=1)
    max_body_bytes: int = Field(2_000_000, ge=1024)
    max_batch_size: int = Field(1000, ge=1)
    max_free_text_chars: int = Field(1000, ge=10)

    # Confidentiality thresholds (brief invariant 4).
    k_min_group: int = Field(5, ge=1)
    k_min_official: int = Field(10, ge=1)

    # Circular 01/2018 classification of a total out of 18: minimum score for each band.
    band_mot_cua_xuat_sac: float = 15.0
    band_mot_cua_tot: float = 12.0
    band_mot_cua_kha: float = 9.0
    band_mot_cua_trung_binh: float = 6.0
    # Decision 766 satisfaction-rate bands, in percent.
    band_766_xuat_sac: float = 90.0
    band_766_tot: float = 80.0
    band_766_kha: float = 70.0
    band_766_trung_binh: float = 50.0

    dispatcher_interval_seconds: float = Field(0.5, gt=0)
    outbox_max_attempts: int = Field(8, ge=1)

    telegram_token: str | None = None
    telegram_bot_username: str | None = None
    telegram_api_base_url: str = "https://api.telegram.org/bot"
    telegram_webhook_secret: str | None = None

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @property
    def effective_database_url(self) -> str:
        """The configured database, or the embedded SQLite file under ``var_dir``."""
        return self.database_url or f"sqlite+aiosqlite:///{self.var_dir / 'surveybot.db'}"

    @property
    def effective_public_base_url(self) -> str:
        return (self.public_base_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def is_production(self) -> bool:
        return self.env == "production"


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one clear line per bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = "SURVEYBOT_" + "_".join(str(p) for p in error["loc"]).upper()
            secret = any(word in name for word in ("KEY", "TOKEN", "SECRET", "PASSWORD"))
            shown = "" if secret else f" (got {error.get('input')!r})"
            lines.append(f"{name}: {error['msg']}{shown}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None


@functools.cache
def get_settings() -> Settings:
    return load_settings()
