"""Dashboard logins: argon2 password hashes, database-backed sessions, CSRF tokens.

The cookie carries a random token and nothing else; only its SHA-256 is stored, so a database
leak yields no usable session. Each session has its own CSRF token, required on every POST.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select

from storage.db import Sessions
from storage.models import AdminSession, AdminUser, Agency, utcnow

ROLES = ("admin", "viewer")
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

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


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
        if role == "viewer":
            if not agency_code:
                raise AuthError("an agency viewer needs --agency")
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
    return Principal(user.id, user.username, user.role, user.agency_id, admin_session.csrf)


async def close_session(sessions: Sessions, token: str | None) -> None:
    if token:
        async with sessions() as session:
            await session.execute(
                delete(AdminSession).where(AdminSession.token_hash == _digest(token))
            )
            await session.commit()
