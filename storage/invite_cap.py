"""The invitation cap: a citizen is invited at most once per ``SURVEYBOT_INVITE_CAP_DAYS``,
whichever agencies report their results.

What is kept is the least that can decide it: per way of reaching the citizen (a chat, a phone
on a channel) one ``invite_cap`` row, ``HMAC(contact key, "invite-cap:<channel>:<address>")``
and the UTC day of the last invitation. The hash is of its own (it matches no contact or rater
pseudonym, nor any other row, without the keys), looked up under every listed key, and the row
is deleted once the window has passed (``purge``, maintenance loop) or when the citizen says
/delete (``forget``). It names no agency, no survey and no outcome: a capped result says only
that this citizen was invited by someone in the last days (docs/threat-model.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable, Iterable, Mapping

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import InviteCap
from storage.pseudonym import KeyRing
from storage.upsert import chunks, insert_ignoring

PURPOSE = "contact"


def _values(addresses: Iterable[str]) -> list[str]:
    return sorted({f"invite-cap:{address}" for address in addresses})


def _every_digest(keys: KeyRing, values: Iterable[str]) -> list[str]:
    return [p.digest for value in values for p in keys.candidates(PURPOSE, value)]


async def claim(
    session: AsyncSession, keys: KeyRing, addresses: Iterable[str], today: dt.date, days: int
) -> bool:
    """True, and the citizen recorded as invited today, unless one of ``addresses`` (raw
    ``<channel>:<address>``) was invited in the last ``days`` days (then False: capped). Two
    results claiming one citizen at once: the unique hash lets one win, the other is capped."""
    values = _values(addresses)
    if days <= 0 or not values:
        return True
    digests = _every_digest(keys, values)
    recent = await session.execute(
        select(InviteCap.cap_hash)
        .where(InviteCap.cap_hash.in_(digests), InviteCap.invited_on > today - dt.timedelta(days))
        .limit(1)
    )
    if recent.first() is not None:
        return False
    return await _record(session, keys, values, digests, today)


async def claim_many(
    session: AsyncSession,
    keys: KeyRing,
    reaches: Mapping[Hashable, Iterable[str]],
    today: dt.date,
    days: int,
) -> set[Hashable]:
    """``claim`` for a batch, in a few statements whatever its size: the keys of ``reaches``
    (in order) whose citizen may be invited today, each then recorded. A citizen reached by
    two results of the batch is claimed by the first; one claimed by a concurrent report
    (the unique hash) is capped here, and nothing of its claim is kept."""
    values = {item: _values(addresses) for item, addresses in reaches.items()}
    if days <= 0:
        return set(values)
    claimed = {item for item, own in values.items() if not own}
    digests = {item: _every_digest(keys, own) for item, own in values.items() if own}
    every = sorted({d for own in digests.values() for d in own})
    recent: set[str] = set()
    for part in chunks(every):
        recent.update(
            (
                await session.execute(
                    select(InviteCap.cap_hash).where(
                        InviteCap.cap_hash.in_(part),
                        InviteCap.invited_on > today - dt.timedelta(days),
                    )
                )
            ).scalars()
        )
    taken: set[str] = set()
    wanted: dict[Hashable, list[str]] = {}
    for item, own in digests.items():
        if recent.isdisjoint(own) and taken.isdisjoint(values[item]):
            taken.update(values[item])
            wanted[item] = [keys.pseudonym(PURPOSE, value).digest for value in values[item]]
    if not wanted:
        return claimed
    stale = sorted({d for item in wanted for d in digests[item]})  # expired rows, other keys
    for part in chunks(stale):
        await session.execute(
            delete(InviteCap)
            .where(InviteCap.cap_hash.in_(part))
            .execution_options(synchronize_session=False)
        )
    # Sorted: concurrent batches claiming the same citizens take the rows in one order.
    rows = [
        {"cap_hash": h, "invited_on": today}
        for h in sorted(h for own in wanted.values() for h in own)
    ]
    written = set(
        (
            await session.execute(
                insert_ignoring(session, InviteCap, ["cap_hash"]).returning(
                    InviteCap.__table__.c.cap_hash
                ),
                rows,
            )
        ).scalars()
    )
    lost = [item for item, own in wanted.items() if not written.issuperset(own)]
    if lost:  # a concurrent report invited this citizen first: capped, nothing of ours kept
        mine = sorted({h for item in lost for h in wanted[item]} & written)
        if mine:
            await session.execute(
                delete(InviteCap)
                .where(InviteCap.cap_hash.in_(mine))
                .execution_options(synchronize_session=False)
            )
    return claimed | (set(wanted) - set(lost))


async def record(
    session: AsyncSession, keys: KeyRing, addresses: Iterable[str], today: dt.date, days: int
) -> None:
    """Note an invitation the citizen asked for themselves (a link opened after the result):
    it starts whatever the cap says, and counts for the next ones."""
    values = _values(addresses)
    if days > 0 and values:
        await _record(session, keys, values, _every_digest(keys, values), today)


async def _record(
    session: AsyncSession, keys: KeyRing, values: list[str], digests: list[str], today: dt.date
) -> bool:
    try:
        async with session.begin_nested():
            await session.execute(delete(InviteCap).where(InviteCap.cap_hash.in_(digests)))
            session.add_all(
                InviteCap(cap_hash=keys.pseudonym(PURPOSE, value).digest, invited_on=today)
                for value in values
            )
            await session.flush()
    except IntegrityError:
        return False
    return True


async def forget(session: AsyncSession, keys: KeyRing, addresses: Iterable[str]) -> None:
    """/delete: this chat's cap row goes with everything else it left."""
    digests = _every_digest(keys, _values(addresses))
    if digests:
        await session.execute(
            delete(InviteCap)
            .where(InviteCap.cap_hash.in_(digests))
            .execution_options(synchronize_session=False)
        )


async def purge(session: AsyncSession, today: dt.date, days: int) -> int:
    """Delete the rows that can no longer cap anybody (all of them when the cap is off)."""
    result = await session.execute(
        delete(InviteCap)
        .where(InviteCap.invited_on <= today - dt.timedelta(days=max(days, 0)))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
