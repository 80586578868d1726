"""Forgetting on a schedule: what closed surveys left behind for delivery and de-duplication.

Why a schedule and not the moment a survey closes: a closed survey's last messages (the final
acknowledgement, the thank-you) are still being delivered, and a webhook can still be redelivered
for a few minutes. Each table keeps its rows only while something still needs them:

* ``outbox``: a retired row (sent, dead, cancelled) has already lost its payload, address and
  contact pseudonym (``storage.outbox.retired``); it is deleted once it is older than the
  retention and no open invitation needs its dedup key (``storage.outbox.purge``).
* ``zns_tracking``: a tracking id only matches a ZNS rating to an open invitation; once the
  invitation is gone (rated, expired, erased, undeliverable) a late rating is ignored anyway, so
  the row (and the tracking id Zalo could map back to a phone) goes.
* ``inbox_event``: a processed event (already emptied of its body) is a replay mark; it goes
  after ``inbox_window``, longer than every channel's redelivery window (an older redelivery is
  refused by its timestamp, so the mark that would refuse it is no longer needed); a dead letter keeps its sealed body for an admin to
  requeue for ``DEAD_LETTER_RETENTION``, then goes.

Run by the maintenance loop (``SurveyService.purge_closed``); every call is idempotent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage import inbox, outbox
from storage.models import Invitation, ZnsTracking

DEAD_LETTER_RETENTION = dt.timedelta(hours=72)


@dataclass(frozen=True, slots=True)
class Purged:
    """How many rows of each table one round deleted (for logs and tests)."""

    outbox: int = 0
    zns_tracking: int = 0
    inbox: int = 0
    #: Invitation-cap rows past their window (``storage.invite_cap``, purged by the lifecycle).
    invite_cap: int = 0

    @property
    def total(self) -> int:
        return self.outbox + self.zns_tracking + self.inbox + self.invite_cap


async def purge(
    session: AsyncSession,
    *,
    now: dt.datetime,
    outbox_retention: dt.timedelta,
    inbox_window: dt.timedelta,
    dead_letter_retention: dt.timedelta = DEAD_LETTER_RETENTION,
) -> Purged:
    """One round, in the caller's transaction (the caller commits)."""
    messages = await outbox.purge(session, now - outbox_retention)
    tracking = await session.execute(
        delete(ZnsTracking)
        .where(
            or_(
                ZnsTracking.invitation_id.is_(None),
                ZnsTracking.invitation_id.not_in(select(Invitation.id)),
            )
        )
        .execution_options(synchronize_session=False)
    )
    events = await inbox.purge(
        session,
        now=now,
        done_after=inbox_window,
        dead_after=dead_letter_retention,
    )
    return Purged(
        messages,
        int(tracking.rowcount or 0),  # type: ignore[attr-defined]
        events,
    )
