"""Managing dashboard logins from the dashboard: create with a role and a unit, disable (every
session of the login ends at once), reset a password (the login must choose a new one at its
next sign-in), force a password change, and one's own password change.

Who may do which to whom is ``bot.dashboard.scope``'s answer; this module only does it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.dashboard.auth import HASHER, ROLES, AuthError
from storage.db import Sessions
from storage.models import AdminSession, AdminUser, Agency

MIN_PASSWORD = 8


@dataclass(frozen=True, slots=True)
class Login:
    id: str
    username: str
    role: str
    agency_id: str | None
    agency_code: str | None
    disabled: bool
    must_change_password: bool
    created_at: dt.datetime


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= 1024:
        raise AuthError("password must have at least 8 characters")
    return password


async def listing(sessions: Sessions, agency_ids: Collection[str] | None) -> list[Login]:
    """Logins bound to the given units (None: every login, the province admins' too)."""
    stmt = select(AdminUser, Agency.code).outerjoin(Agency, Agency.id == AdminUser.agency_id)
    if agency_ids is not None:
        stmt = stmt.where(AdminUser.agency_id.in_(list(agency_ids)))
    async with sessions() as session:
        rows = await session.execute(stmt.order_by(AdminUser.username))
        return [_login(u, code) for u, code in rows]


async def get(sessions: Sessions, user_id: str) -> Login | None:
    async with sessions() as session:
        row = (
            await session.execute(
                select(AdminUser, Agency.code)
                .outerjoin(Agency, Agency.id == AdminUser.agency_id)
                .where(AdminUser.id == user_id[:32])
            )
        ).one_or_none()
    return None if row is None else _login(*row)


def _login(user: AdminUser, code: str | None) -> Login:
    return Login(
        user.id, user.username, user.role, user.agency_id, code, user.disabled,
        user.must_change_password, user.created_at,
    )  # fmt: skip


async def create(
    sessions: Sessions, username: str, password: str, role: str, agency_id: str | None
) -> Login:
    """A new login; it must change the password an admin chose for it at its first sign-in."""
    username = username.strip()
    if not username or len(username) > 64 or not username.isprintable():
        raise AuthError("username must have 1 to 64 printable characters")
    if role not in ROLES:
        raise AuthError("role must be admin, manager or viewer")
    if (role == "admin") != (agency_id is None):
        raise AuthError("a province admin has no unit; a manager or viewer needs one")
    check_password(password)
    async with sessions() as session:
        taken = await session.scalar(select(AdminUser.id).where(AdminUser.username == username))
        if taken is not None:
            raise AuthError("this username is taken")
        user = AdminUser(
            username=username,
            password_hash=HASHER.hash(password),
            role=role,
            agency_id=agency_id,
            disabled=False,
            must_change_password=True,
        )
        session.add(user)
        try:
            await session.commit()
        except IntegrityError:  # the same name created at the same moment: the unique key won
            raise AuthError("this username is taken") from None
        code = (
            None
            if agency_id is None
            else await session.scalar(select(Agency.code).where(Agency.id == agency_id))
        )
        return _login(user, code)


async def _end_sessions(session: AsyncSession, user_id: str) -> None:
    await session.execute(delete(AdminSession).where(AdminSession.user_id == user_id))


async def set_disabled(sessions: Sessions, user_id: str, disabled: bool) -> None:
    """Disable (every open session ends with it) or enable a login."""
    async with sessions() as session:
        user = await session.get(AdminUser, user_id)
        if user is None:
            raise AuthError("no such login")
        user.disabled = disabled
        if disabled:
            await _end_sessions(session, user_id)
        await session.commit()


async def reset_password(sessions: Sessions, user_id: str, password: str) -> None:
    """A new password chosen by an admin: the login's sessions end and it must change it."""
    check_password(password)
    async with sessions() as session:
        user = await session.get(AdminUser, user_id)
        if user is None:
            raise AuthError("no such login")
        user.password_hash = HASHER.hash(password)
        user.must_change_password = True
        await _end_sessions(session, user_id)
        await session.commit()


async def force_change(sessions: Sessions, user_id: str) -> None:
    """The login keeps its password but must change it at its next page."""
    async with sessions() as session:
        user = await session.get(AdminUser, user_id)
        if user is None:
            raise AuthError("no such login")
        user.must_change_password = True
        await session.commit()


async def change_own(sessions: Sessions, user_id: str, current: str, new: str) -> None:
    """One's own change: the current password is checked, the new one must differ."""
    check_password(new)
    if new == current:
        raise AuthError("the new password must differ from the current one")
    async with sessions() as session:
        user = await session.get(AdminUser, user_id)
        if user is None:
            raise AuthError("no such login")
        try:
            HASHER.verify(user.password_hash, current)
        except (VerificationError, InvalidHashError):
            raise AuthError("the current password is wrong") from None
        user.password_hash = HASHER.hash(new)
        user.must_change_password = False
        await session.commit()
