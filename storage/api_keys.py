"""Agency API keys: created once (the raw key is shown once and only its SHA-256 stored),
listed with their label and last use, revoked for good.

Every request looks its key up in the database (no cache), so a revoked key is refused by the
very next request of any process. The last use is kept to the hour: enough to tell a live key
from a forgotten one, and at most one write per key and hour.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import bindparam, select, update

from storage.db import Sessions
from storage.models import Agency, ApiKey, utcnow
from storage.pseudonym import token_digest

PREFIX = "sbk_"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    agency_id: str
    agency_code: str
    prefix: str
    label: str | None
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


def _hour(now: dt.datetime) -> dt.datetime:
    return now.replace(minute=0, second=0, microsecond=0)


async def create(sessions: Sessions, agency_id: str, label: str | None) -> tuple[str, str]:
    """(key id, raw key): the raw key exists only in this answer."""
    raw = PREFIX + secrets.token_urlsafe(32)
    async with sessions() as session:
        key = ApiKey(agency_id=agency_id, prefix=raw[:10], key_hash=token_digest(raw), label=label)
        session.add(key)
        await session.commit()
        return key.id, raw


#: The lookup every agency request makes, built once with a bound digest (building it per
#: request was a fifth of the lookup's CPU: ``python -m bench ingest --profile``).
_LIVE_KEY = (
    select(Agency, ApiKey.id, ApiKey.last_used_at)
    .join(ApiKey, ApiKey.agency_id == Agency.id)
    .where(ApiKey.key_hash == bindparam("digest"), ApiKey.revoked_at.is_(None))
)


async def authenticate(sessions: Sessions, raw_key: str) -> Agency | None:
    """The agency of a live key, its hour of last use recorded; None if unknown or revoked."""
    now = utcnow()
    async with sessions() as session:
        row = (await session.execute(_LIVE_KEY, {"digest": token_digest(raw_key)})).one_or_none()
        if row is None:
            return None
        agency, key_id, last = row
        if last is None or last < _hour(now):
            await session.execute(
                update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=_hour(now))
            )
            await session.commit()
        return agency


async def listing(sessions: Sessions, agency_ids: Collection[str] | None) -> list[KeyInfo]:
    """Keys of the given units (None: every unit), newest first."""
    stmt = select(ApiKey, Agency.code).join(Agency, Agency.id == ApiKey.agency_id)
    if agency_ids is not None:
        stmt = stmt.where(ApiKey.agency_id.in_(list(agency_ids)))
    async with sessions() as session:
        rows = await session.execute(stmt.order_by(ApiKey.created_at.desc()))
        return [
            KeyInfo(k.id, k.agency_id, code, k.prefix, k.label, k.created_at, k.last_used_at,
                    k.revoked_at)
            for k, code in rows
        ]  # fmt: skip


async def get(sessions: Sessions, key_id: str) -> KeyInfo | None:
    async with sessions() as session:
        row = (
            await session.execute(
                select(ApiKey, Agency.code)
                .join(Agency, Agency.id == ApiKey.agency_id)
                .where(ApiKey.id == key_id[:32])
            )
        ).one_or_none()
    if row is None:
        return None
    k, code = row
    return KeyInfo(
        k.id, k.agency_id, code, k.prefix, k.label, k.created_at, k.last_used_at, k.revoked_at
    )


async def revoke(sessions: Sessions, key_id: str) -> bool:
    """Revoke a live key; False when it was revoked already (or does not exist)."""
    async with sessions() as session:
        result = await session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id[:32], ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        await session.commit()
        return bool(getattr(result, "rowcount", 0))
