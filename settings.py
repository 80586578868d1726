"""All configuration, read once from ``SURVEYBOT_*`` environment variables or a ``.env`` file.

Every threshold the regulation sets lives here rather than in code, because the rules change
(Decree 118/2025 replaced Decree 61/2018) and an agency must be able to follow a new circular
without a release.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import zoneinfo
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
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
    #: ``json``: one JSON object per log line; ``text``: the classic line. Unset: json in
    #: production, text elsewhere. Either way every line is redacted (bot/logs.py).
    log_format: Literal["json", "text"] | None = None
    #: ``GET /metrics`` (Prometheus text format, bot/telemetry.py); 404 while off.
    metrics_enabled: bool = False
    #: When set, /metrics wants ``Authorization: Bearer <token>``; required in production.
    metrics_token: str | None = None

    # Keys: a JSON document {"<purpose>": [{"id": "...", "key": "<base64>"}, ...]}, active key first.
    keys: str | None = None
    keys_file: Path | None = None

    default_language: Literal["vi", "en"] = "vi"
    default_survey: str = "mot-cua"
    #: A folder of survey definitions (*.yaml) added to the package's; every version used is
    #: also kept in the database (storage/surveys.py), so a file may be removed once replaced.
    surveys_dir: Path | None = None
    survey_ttl_hours: int = Field(7 * 24, ge=1)
    reminder_after_hours: int = Field(24, ge=1)
    #: No invitation or reminder goes out between these local times (HH:MM, 24 h clock, in
    #: ``quiet_hours_timezone``); one created inside them is held until they end
    #: (storage/schedule.py). Replies inside a conversation are never held. Both empty, or
    #: equal, switch quiet hours off; a start after the end runs over midnight.
    quiet_hours_start: str = "21:00"
    quiet_hours_end: str = "07:00"
    quiet_hours_timezone: str = "Asia/Ho_Chi_Minh"
    #: A citizen (by a keyed hash of each way we reach them) is invited at most once in this
    #: many days, across agencies; a result reported inside the window is recorded as
    #: ``capped`` and starts no survey. 0 switches the cap off.
    invite_cap_days: int = Field(7, ge=0, le=366)
    rating_token_ttl_days: int = Field(60, ge=1)
    max_body_bytes: int = Field(2_000_000, ge=1024)
    max_batch_size: int = Field(1000, ge=1)
    max_free_text_chars: int = Field(1000, ge=10)
    #: JSON bodies nested deeper than this are refused with 400 (bot/body.py).
    max_json_depth: int = Field(32, ge=4, le=200)
    #: A body not fully received within this many seconds is refused with 408 (slow clients).
    body_read_timeout_seconds: float = Field(10.0, gt=0)

    # Confidentiality thresholds (brief invariant 4).
    k_min_group: int = Field(5, ge=1)
    k_min_official: int = Field(10, ge=1)
    #: Figures are published per closed period of this length, each computed once and frozen
    #: (storage/releases.py): live counts are never shown, so looking twice teaches nothing.
    release_period: Literal["week", "month", "quarter"] = "month"
    #: How long after a period ends its release is computed; by default the survey lifetime, so
    #: every survey answered in the period has closed and been scored first.
    release_delay_hours: int | None = Field(None, ge=0)

    # Admin dashboard (issue 5): sessions live in the database; the cookie is Secure when the
    # public URL is https.
    admin_session_hours: float = Field(8.0, gt=0)
    #: Where each new audit head is appended, outside the database (default: under var_dir).
    #: Put it on storage the database's users cannot write, or ship it off the machine.
    audit_anchor_file: Path | None = None

    # Bands of each scoring scheme (bot/flows/scoring.py SCHEMES), named by the scheme's
    # ``band_prefix``: the minimum of each band. Circular 01/2018 ("circular-01-2018") bands a
    # total out of 18; `surveybot scores recompute` re-bands stored responses after a change.
    band_mot_cua_xuat_sac: float = 15.0
    band_mot_cua_tot: float = 12.0
    band_mot_cua_kha: float = 9.0
    band_mot_cua_trung_binh: float = 6.0
    # Decision 766 ("decision-766") bands a unit's satisfaction rate, in percent.
    band_766_xuat_sac: float = 90.0
    band_766_tot: float = 80.0
    band_766_kha: float = 70.0
    band_766_trung_binh: float = 50.0

    dispatcher_interval_seconds: float = Field(0.5, gt=0)
    outbox_max_attempts: int = Field(8, ge=1)
    #: A dispatcher's claim on a message; renewed while its send runs, taken over once it
    #: lapses (a process that died mid-send).
    outbox_lease_seconds: int = Field(60, ge=1)
    #: Hours a retired outbox row (already without payload, address or contact pseudonym) is
    #: kept before it is deleted, once its survey has closed (brief invariant 6).
    outbox_retention_hours: int = Field(6, ge=1)
    #: How long a webhook waits for the event it just stored to be processed before answering
    #: 200 anyway (it goes on in the background); Zalo wants its answer within 2 s.
    inbox_inline_seconds: float = Field(1.5, gt=0, le=10)
    #: Attempts before an inbound event becomes a dead letter an admin can requeue.
    inbox_max_attempts: int = Field(8, ge=1)
    #: A worker's claim on an event; renewed while the handler runs, taken over once it lapses.
    inbox_lease_seconds: int = Field(60, ge=1)
    #: A processed event's replay mark (its keyed event id) is kept this long: longer than
    #: every channel's redelivery window (Telegram keeps an update 24 h).
    inbox_replay_mark_hours: int = Field(48, ge=25)

    telegram_token: str | None = None
    telegram_bot_username: str | None = None
    telegram_api_base_url: str = "https://api.telegram.org/bot"
    telegram_webhook_secret: str | None = None
    #: Long polling (getUpdates) instead of the webhook, for deployments without public HTTPS.
    telegram_polling: bool = False
    telegram_poll_timeout_seconds: int = Field(25, ge=0, le=50)
    #: In webhook mode, call setWebhook for ``<public base URL>/telegram/webhook`` at start-up.
    telegram_register_webhook: bool = True
    #: The Bot API at ``telegram_api_base_url`` is a local ``telegram-bot-api --local`` server,
    #: which accepts a plain-HTTP webhook on any port (the public one does not).
    telegram_local_bot_api: bool = False
    #: Outbound flood limits: about 1 message/s per chat with short bursts, about 30/s per bot.
    telegram_per_chat_limit: int = Field(3, ge=0)
    telegram_per_chat_window_seconds: float = Field(3.0, gt=0)
    telegram_per_bot_limit: int = Field(25, ge=0)
    telegram_per_bot_window_seconds: float = Field(1.0, gt=0)

    # Zalo (issue 4). The OA and ZNS share one app and its OAuth token pair; the bot is separate.
    zalo_app_id: str | None = None
    zalo_app_secret: str | None = None
    #: The OA Secret Key from the app's webhook settings (signs X-ZEvent-Signature).
    zalo_oa_secret: str | None = None
    #: Bootstrap refresh token (from the consent flow or the API Explorer); used once, then the
    #: rotating pair lives sealed in the database.
    zalo_refresh_token: str | None = None
    zalo_oa_id: str | None = None
    zalo_oauth_base_url: str = "https://oauth.zaloapp.com"
    zalo_openapi_base_url: str = "https://openapi.zalo.me"
    zalo_business_base_url: str = "https://business.openapi.zalo.me"
    zalo_http_timeout_seconds: float = Field(10.0, gt=0)
    #: Refresh this long before the access token expires (it lives 25 h).
    zalo_token_refresh_margin_seconds: int = Field(5 * 3600, ge=60)
    #: How long Zalo sends wait after a refresh failed (an admin must re-consent meanwhile).
    zalo_token_pause_seconds: float = Field(300.0, gt=0)
    #: A refresh that failed for a passing reason (HTTP 429/5xx, network error or timeout,
    #: Zalo's rate-limit code, an unknown code) is tried this many times in all, waiting
    #: ``backoff`` seconds, doubled after each try, with jitter, and never past ``budget``
    #: seconds in all; then sends wait ``retry_later`` seconds and the grant stays usable.
    zalo_token_refresh_attempts: int = Field(4, ge=1, le=10)
    zalo_token_refresh_backoff_seconds: float = Field(1.0, gt=0)
    zalo_token_refresh_budget_seconds: float = Field(20.0, gt=0)
    zalo_token_refresh_retry_later_seconds: float = Field(60.0, gt=0)
    zalo_oa_max_buttons: int = Field(5, ge=1, le=10)
    #: Zalo redelivers a failed webhook with the same body and its original timestamp after
    #: 30 s, 5 min, 15 min, 30 min and 1 h, the last try about 1 h 51 min after the first
    #: (../shared/reference/zalo.md); an event is refused as stale only past that whole ladder.
    #: A replay inside the window is refused by its event id (kept three windows).
    zalo_webhook_max_age_seconds: int = Field(3 * 3600, ge=30)
    #: How far in the future an event's timestamp may be (the two clocks' skew).
    zalo_webhook_max_skew_seconds: int = Field(300, ge=0)
    zalo_zns_rating_template_id: str | None = None
    #: JSON object of template parameters; values may use {agency} and {procedure}.
    zalo_zns_template_data: str = "{}"
    #: "development" sends only to the app's admins (Zalo's test mode); empty for production.
    zalo_zns_mode: str | None = None
    #: How far back the rating/get reconciliation looks, in hours.
    zalo_zns_reconcile_hours: int = Field(8 * 24, ge=1)
    zalo_bot_token: str | None = None
    zalo_bot_api_base_url: str = "https://bot-api.zaloplatforms.com"
    zalo_bot_webhook_secret: str | None = None
    zalo_bot_polling: bool = False

    #: The order in which an invitation tries the channels a citizen bound (first reachable
    #: wins; on a permanent refusal the next one is tried). Unlisted channels come last.
    channel_order: str = "telegram,zalo_oa,zalo_bot,web,zns"

    # Abuse limits (issue 13): token buckets shared by every worker through Redis (in process
    # for the embedded default). A bucket holds BURST requests and refills at RATE per second.
    #: Off only for load tests and fuzzers: every limit below stops applying.
    rate_limits_enabled: bool = True
    #: Agency API, per API key (generous: a whole day's batch is one request).
    api_rate_per_second: float = Field(50.0, gt=0)
    api_burst: int = Field(500, ge=1)
    #: Seconds a process keeps a valid API key's agency and known procedure and official codes
    #: in memory (0: never): a revoked key is refused at most this long after its revocation.
    api_cache_seconds: float = Field(5.0, ge=0, le=60)
    #: Per agency: "code=rate[:burst],..." (e.g. "ubnd-q1=200:2000"); others use the defaults.
    api_rate_by_agency: str = ""
    #: Missing, unknown or revoked keys, per client address.
    api_bad_key_rate_per_second: float = Field(0.2, gt=0)
    api_bad_key_burst: int = Field(20, ge=1)
    #: Reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client.
    trusted_proxies: str = ""
    #: Dashboard logins: wrong passwords per (account, client address) pair, the lockout...
    login_pair_attempts: int = Field(10, ge=1)
    login_pair_refill_seconds: float = Field(60.0, gt=0)
    #: ...per client address over every account...
    login_client_attempts: int = Field(30, ge=1)
    login_client_refill_seconds: float = Field(20.0, gt=0)
    #: ...and per account over every client; once spent, only a client with no recent failure
    #: on the account may try (once), so an attacker cannot lock an admin out.
    login_account_attempts: int = Field(40, ge=1)
    login_account_refill_seconds: float = Field(30.0, gt=0)
    #: Per chat: messages and taps a citizen may send; beyond, one "please slow down" reply
    #: per SURVEYBOT_CHAT_SLOWDOWN_NOTICE_SECONDS and nothing else.
    chat_rate_per_second: float = Field(1.0, gt=0)
    chat_burst: int = Field(20, ge=1)
    chat_slowdown_notice_seconds: int = Field(60, ge=1)
    #: The same button tapped again within this many seconds after it was answered is the same
    #: tap: no second answer, no "earlier question" note.
    tap_dedup_seconds: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _production_needs_redis(self) -> Settings:
        # Without Redis each process would keep its own locks, limits and dedup marks: two
        # processes could spend Zalo's single-use refresh token twice, or answer one tap twice.
        if self.env == "production" and not self.redis_url:
            raise ValueError(
                "SURVEYBOT_REDIS_URL is required in production (redis://host:6379/0): several "
                "processes share locks, rate limits and the Zalo refresh token through it"
            )
        return self

    @model_validator(mode="after")
    def _inbox_retries_outlive_the_tap_mark(self) -> Settings:
        # A tap is marked seen (in Redis) before its answer commits. If the process dies in
        # between, the inbox retries the event once the lease runs out: the mark must have
        # expired by then, or the retry is taken for a double tap and the answer is lost.
        if self.inbox_lease_seconds <= self.tap_dedup_seconds:
            raise ValueError(
                "SURVEYBOT_INBOX_LEASE_SECONDS must be longer than SURVEYBOT_TAP_DEDUP_SECONDS "
                f"({self.inbox_lease_seconds} <= {self.tap_dedup_seconds}): a retried tap would "
                "be taken for a double tap"
            )
        return self

    @model_validator(mode="after")
    def _production_metrics_need_a_token(self) -> Settings:
        # The counters move when citizens answer: they are for operators, never for an agency.
        if self.is_production and self.metrics_enabled and not self.metrics_token:
            raise ValueError(
                "SURVEYBOT_METRICS_TOKEN is required in production when SURVEYBOT_METRICS_ENABLED "
                "is on (the scraper sends it as Authorization: Bearer <token>)"
            )
        return self

    @model_validator(mode="after")
    def _telegram_can_reach_us(self) -> Settings:
        # The public Bot API refuses a webhook that is not HTTPS on 443, 80, 88 or 8443: the
        # client only logs a warning and no update ever arrives. In production that is a start
        # that runs blind, so it is refused here, saying why and what to set.
        if not self.is_production or not self.telegram_token or self.telegram_polling:
            return self
        if not self.telegram_webhook_secret:
            raise ValueError(
                "SURVEYBOT_TELEGRAM_WEBHOOK_SECRET is required in production for Telegram's "
                "webhook (or set SURVEYBOT_TELEGRAM_POLLING=true to use long polling)"
            )
        if self.telegram_register_webhook and not self.telegram_local_bot_api:
            problem = telegram_webhook_problem(self.telegram_webhook_url)
            if problem:
                raise ValueError(
                    f"the Telegram webhook {self.telegram_webhook_url} would be refused by the "
                    f"Bot API: {problem}. Set SURVEYBOT_PUBLIC_BASE_URL to this service's public "
                    "HTTPS address, or use SURVEYBOT_TELEGRAM_POLLING=true"
                )
        return self

    @field_validator("quiet_hours_start", "quiet_hours_end")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(r"([01]?[0-9]|2[0-3]):[0-5][0-9]", value):
            raise ValueError("must be a time of day as HH:MM (00:00-23:59), or empty")
        return value

    @field_validator("quiet_hours_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone such as Asia/Ho_Chi_Minh") from None
        return value

    @model_validator(mode="after")
    def _quiet_hours_both_or_neither(self) -> Settings:
        if bool(self.quiet_hours_start) != bool(self.quiet_hours_end):
            raise ValueError(
                "SURVEYBOT_QUIET_HOURS_START and SURVEYBOT_QUIET_HOURS_END must both be set "
                "(HH:MM) or both be empty (quiet hours off)"
            )
        return self

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value or None

    @field_validator("api_rate_by_agency")
    @classmethod
    def _agency_rates(cls, value: str) -> str:
        _parse_agency_rates(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        _parse_networks(value)
        return value

    @property
    def agency_rates(self) -> dict[str, tuple[float, int]]:
        """``api_rate_by_agency`` as agency code → (rate per second, burst)."""
        return _parse_agency_rates(self.api_rate_by_agency)

    @property
    def trusted_proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return _parse_networks(self.trusted_proxies)

    @property
    def effective_database_url(self) -> str:
        """The configured database, or the embedded SQLite file under ``var_dir``."""
        return self.database_url or f"sqlite+aiosqlite:///{self.var_dir / 'surveybot.db'}"

    @property
    def effective_audit_anchor_file(self) -> Path:
        return self.audit_anchor_file or self.var_dir / "audit-anchor.jsonl"

    @property
    def effective_public_base_url(self) -> str:
        return (self.public_base_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def telegram_webhook_url(self) -> str:
        """Where Telegram is asked to deliver updates."""
        return f"{self.effective_public_base_url}/telegram/webhook"

    @property
    def effective_release_delay_hours(self) -> int:
        return (
            self.survey_ttl_hours if self.release_delay_hours is None else self.release_delay_hours
        )

    @property
    def channel_priority(self) -> list[str]:
        """``channel_order`` as a list, blanks dropped."""
        return [c.strip() for c in self.channel_order.split(",") if c.strip()]

    @property
    def zalo_oa_configured(self) -> bool:
        return bool(self.zalo_app_id and self.zalo_app_secret and self.zalo_oa_secret)

    @property
    def effective_log_format(self) -> Literal["json", "text"]:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.is_production else "text"

    @property
    def is_production(self) -> bool:
        return self.env == "production"


def _parse_agency_rates(value: str) -> dict[str, tuple[float, int]]:
    rates: dict[str, tuple[float, int]] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        code, sep, spec = item.partition("=")
        rate_text, _, burst_text = spec.partition(":")
        try:
            rate = float(rate_text)
            burst = int(burst_text) if burst_text else max(1, int(rate * 10))
        except ValueError:
            rate = burst = 0
        if not sep or not code.strip() or not rate > 0 or burst < 1 or not math.isfinite(rate):
            raise ValueError(f"expected code=rate[:burst] with rate > 0, got {item!r}")
        rates[code.strip()] = (rate, burst)
    return rates


def _parse_networks(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        return [
            ipaddress.ip_network(p.strip(), strict=False) for p in value.split(",") if p.strip()
        ]
    except ValueError as exc:
        raise ValueError(f"expected IP addresses or networks: {exc}") from None


#: The ports the public Bot API delivers webhooks to (../shared/reference/telegram.md §1.1).
TELEGRAM_WEBHOOK_PORTS = frozenset({443, 80, 88, 8443})


def telegram_webhook_problem(url: str) -> str | None:
    """Why the public Bot API would refuse ``url`` as a webhook, or None."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        return "it accepts only https:// URLs"
    if not parts.hostname:
        return "the URL has no host"
    try:
        port = parts.port or 443
    except ValueError:
        return "the URL's port is not a number"
    if port not in TELEGRAM_WEBHOOK_PORTS:
        return f"it delivers only to ports 443, 80, 88 or 8443, not {port}"
    return None


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one clear line per bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            if not error["loc"]:  # a rule over several settings: its message names them
                lines.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            name = "SURVEYBOT_" + "_".join(str(p) for p in error["loc"]).upper()
            secret = any(word in name for word in ("KEY", "TOKEN", "SECRET", "PASSWORD"))
            shown = "" if secret else f" (got {error.get('input')!r})"
            lines.append(f"{name}: {error['msg']}{shown}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None


@functools.cache
def get_settings() -> Settings:
    return load_settings()
