"""Dashboard logins: argon2 password hashes, database-backed sessions, CSRF tokens.

The cookie carries a random token and nothing else; only its SHA-256 is stored, so a database
leak yields no usable session. Each session has its own CSRF token, required on every POST.

Logins are throttled (``login_attempt``) by three token buckets shared through the coordinator:
per (account, client address) pair, the lockout an attacker meets; per client address over every
account; and a softer one per account over every client. When the account's bucket is spent (an
attack from many addresses), a client with no recent failure on that account still gets one try,
so a correct password from a fresh client always works: nobody can lock an admin out. A token is
taken *before* the password is checked, so concurrent guesses cannot slip past the limit; a
successful login gives its tokens back. Each lockout is audited once per window, not per request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select

from bot.flows.definition import SurveyCatalog
from bot.i18n import ngettext
from bot.limits import Doors, bucket
from settings import Settings
from storage.audit import AuditLog
from storage.coordination import Coordinator
from storage.db import Sessions
from storage.limits import Decision
from storage.models import AdminSession, AdminUser, Agency, utcnow


@dataclass(frozen=True, slots=True)
class DashboardServices:
    """What the dashboard needs: settings, the database, the audit log, the doors' limits, the
    coordinator's once-per-window marks (one lockout entry per window) and the survey catalog
    (the survey templates page publishes into it). Never the services."""

    settings: Settings
    sessions: Sessions
    audit: AuditLog
    doors: Doors
    coordinator: Coordinator
    catalog: SurveyCatalog


#: Province admin, unit manager, viewer (``bot.dashboard.scope`` says what each may do).
ROLES = ("admin", "manager", "viewer")
HASHER = PasswordHasher()
#: Verified against when the username is unknown, so timing does not reveal valid usernames.
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))


class AuthError(ValueError):
    """A login that cannot be created (bad role, unknown agency, weak password)."""


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    username: str
    role: str
    agency_id: str | None
    csrf: str
    #: A reset password: every page sends the login to the password page until it is changed.
    must_change_password: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_manager(self) -> bool:
        return self.role in ("admin", "manager")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_user(
    sessions: Sessions, username: str, password: str, role: str, agency_code: str | None = None
) -> AdminUser:
    """Create or reset a login (idempotent on the username, so demo seeding can re-run)."""
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise AuthError("password must have at least 8 characters")
    if not username or len(username) > 64:
        raise AuthError("username must have 1 to 64 characters")
    async with sessions() as session:
        agency_id = None
        if role != "admin":
            if not agency_code:
                raise AuthError(f"a {role} needs --agency (the unit whose subtree it sees)")
            agency_id = (
                await session.execute(select(Agency.id).where(Agency.code == agency_code))
            ).scalar_one_or_none()
            if agency_id is None:
                raise AuthError(f"no agency {agency_code!r}")
        user = (
            await session.execute(select(AdminUser).where(AdminUser.username == username))
        ).scalar_one_or_none()
        if user is None:
            user = AdminUser(username=username)
            session.add(user)
        user.password_hash = HASHER.hash(password)
        user.role, user.agency_id, user.disabled = role, agency_id, False
        user.must_change_password = False
        await session.commit()
        return user


async def authenticate(sessions: Sessions, username: str, password: str) -> AdminUser | None:
    async with sessions() as session:
        user = (
            await session.execute(select(AdminUser).where(AdminUser.username == username))
        ).scalar_one_or_none()
    try:
        HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled:
        return None
    return user


@dataclass(frozen=True, slots=True)
class Throttled:
    """A login attempt refused before its password was checked: which limit, and until when."""

    scope: str  # "pair", "client" or "account"
    decision: Decision

    @property
    def retry_after(self) -> str:
        """``Retry-After``: whole seconds, at least 1."""
        return self.decision.retry_after_header

    def message(self, lang: str) -> str:
        minutes = max(1, math.ceil(int(self.retry_after) / 60))
        return ngettext(
            lang,
            "Too many login attempts. Try again in {n} minute.",
            "Too many login attempts. Try again in {n} minutes.",
            minutes,
        )


async def login_attempt(
    services: DashboardServices, username: str, password: str, client: str
) -> AdminUser | Throttled | None:
    """``authenticate`` within the login limits: the user, None (wrong), or ``Throttled``."""
    settings = services.settings
    if not settings.rate_limits_enabled:
        return await authenticate(services.sessions, username, password)
    limiter = services.doors.limiter
    account = username.casefold()
    buckets = {
        "pair": (bucket(services.doors, "login-pair", account, client), settings.login_pair_attempts,
                 settings.login_pair_refill_seconds),
        "client": (bucket(services.doors, "login-client", client), settings.login_client_attempts,
                   settings.login_client_refill_seconds),
        "account": (bucket(services.doors, "login-account", account), settings.login_account_attempts,
                    settings.login_account_refill_seconds),
    }  # fmt: skip
    # The pair first: a client locked out of one account spends nothing else.
    taken: dict[str, Decision] = {}
    for scope, (name, burst, refill) in buckets.items():
        decision = await limiter.take(name, 1 / refill, burst)
        # A spent account bucket still lets through a client whose pair was full (no failure).
        fresh = scope == "account" and taken["pair"].remaining >= buckets["pair"][1] - 1.001
        if not decision.allowed and not fresh:
            await _audit_lockout(services, scope, name, account, decision)
            return Throttled(scope, decision)
        taken[scope] = decision
    user = await authenticate(services.sessions, username, password)
    if user is not None:  # a success gives back what it took, and clears its pair's failures
        await limiter.reset(buckets["pair"][0])
        for scope in ("client", "account"):
            name, burst, refill = buckets[scope]
            if taken[scope].allowed:
                await limiter.take(name, 1 / refill, burst, cost=-1)
    return user


async def _audit_lockout(
    services: DashboardServices, scope: str, name: str, account: str, decision: Decision
) -> None:
    """One audit entry per lockout window, however many requests meet it."""
    window = max(1, math.ceil(decision.retry_after))
    if await services.coordinator.first_time(f"audit:{name}", window):
        await services.audit.record(
            "anonymous",
            "login.throttled",
            {"username": account[:64], "limit": scope, "retry_after": window},
        )


async def open_session(sessions: Sessions, user: AdminUser, hours: float) -> str:
    token = secrets.token_urlsafe(32)
    async with sessions() as session:
        await session.execute(delete(AdminSession).where(AdminSession.expires_at < utcnow()))
        session.add(
            AdminSession(
                token_hash=_digest(token),
                user_id=user.id,
                csrf=secrets.token_urlsafe(24),
                expires_at=utcnow() + dt.timedelta(hours=hours),
            )
        )
        await session.commit()
    return token


async def load_session(sessions: Sessions, token: str | None) -> Principal | None:
    if not token or len(token) > 128:
        return None
    async with sessions() as session:
        row = (
            await session.execute(
                select(AdminSession, AdminUser)
                .join(AdminUser, AdminUser.id == AdminSession.user_id)
                .where(AdminSession.token_hash == _digest(token))
            )
        ).one_or_none()
    if row is None:
        return None
    admin_session, user = row
    if admin_session.expires_at <= utcnow() or user.disabled:
        return None
    return Principal(
        user.id,
        user.username,
        user.role,
        user.agency_id,
        admin_session.csrf,
        user.must_change_password,
    )


async def close_session(sessions: Sessions, token: str | None) -> None:
    if token:
        async with sessions() as session:
            await session.execute(
                delete(AdminSession).where(AdminSession.token_hash == _digest(token))
            )
            await session.commit()
