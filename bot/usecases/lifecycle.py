"""Lifecycle: what the maintenance loop does every minute. Close the surveys past their expiry
(partial answers stay, scored; addresses are deleted), send the one reminder that is due, forget
what closed surveys left for delivery and de-duplication (``storage.retention``).

Expiry and reminders look the due invitations up, then take each one's lock and re-read it, so
an answer being stored at that moment finishes first (and is counted) or finds the survey closed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.flows.engine import Prompt, Step
from bot.i18n import N_, gettext
from bot.usecases.context import ACTIVE, Context
from bot.usecases.outbound import enqueue_step
from bot.usecases.surveys import engine_for, finalize
from storage import invite_cap, outbox, retention
from storage.models import Dossier, Invitation, OutboxMessage

REMINDER = N_("A reminder: your short survey is still open. It takes under a minute.")
#: The dedup key part of a reminder's outbox rows (``<invitation id>:reminder:<order>``).
REMINDER_KEY = "reminder"


class Lifecycle:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def close_expired(self) -> int:
        """Close surveys past their expiry: partial answers stay, addresses are deleted."""
        ctx = self.ctx
        now = ctx.clock()
        closed = 0
        for invitation_id in await self._due(Invitation.expires_at <= now):
            async with ctx.hold(invitation_id), ctx.sessions() as session:
                invitation = await session.get(Invitation, invitation_id)
                if invitation is None or invitation.expires_at > now:
                    continue  # closed (completed, stopped, erased) while we waited
                await finalize(ctx, session, invitation, "expired")
                await session.commit()
                closed += 1
        async with ctx.sessions() as session:
            # Dossiers never reported whose link expired long ago: nothing left to keep.
            stale = now - dt.timedelta(days=ctx.settings.rating_token_ttl_days)
            orphan_ids = select(Invitation.dossier_id)
            await session.execute(
                delete(Dossier).where(Dossier.created_at < stale, Dossier.id.not_in(orphan_ids))
            )
            await session.commit()
        return closed

    async def send_reminders(self) -> int:
        """The one reminder of an open survey, with its current question again.

        Only on a channel that carries one (``Capabilities.reminders``), and once per survey:
        a survey that fell back to another channel after its reminder went out (the reminder's
        outbox row stays while the survey is open, ``outbox.purge``) gets no second one."""
        ctx = self.ctx
        now = ctx.clock()
        sent = 0
        due = Invitation.status.in_(ACTIVE) & (Invitation.reminder_due_at <= now)
        for invitation_id in await self._due(due):
            async with ctx.hold(invitation_id), ctx.sessions() as session:
                invitation = await session.get(Invitation, invitation_id)
                if (
                    invitation is None
                    or invitation.status not in ACTIVE
                    or invitation.reminder_due_at is None
                    or invitation.reminder_due_at > now
                ):
                    continue
                invitation.reminder_due_at = None
                capabilities = ctx.capabilities.get(invitation.channel or "")
                if (
                    capabilities is None
                    or not capabilities.reminders
                    or await _reminded(session, invitation.id)
                ):
                    await session.commit()
                    continue
                prompt = engine_for(ctx, invitation).current_prompt(invitation.state)
                prompts = [Prompt(gettext(invitation.language, REMINDER))]
                prompts += [prompt] if prompt else []
                step = Step(invitation.state, prompts)
                enqueue_step(
                    ctx, session, invitation, step, outbox.PRIORITY_INVITATION, REMINDER_KEY
                )
                await session.commit()
                sent += 1
        if sent:
            ctx.notify()
        return sent

    async def purge_closed(self) -> retention.Purged:
        """Forget what closed surveys left for delivery and de-duplication (maintenance loop)."""
        async with self.ctx.sessions() as session:
            purged = await retention.purge(
                session,
                now=self.ctx.clock(),
                outbox_retention=dt.timedelta(hours=self.ctx.settings.outbox_retention_hours),
                inbox_window=dt.timedelta(hours=self.ctx.settings.inbox_replay_mark_hours),
            )
            capped = await invite_cap.purge(
                session, self.ctx.clock().date(), self.ctx.settings.invite_cap_days
            )
            purged = dataclasses.replace(purged, invite_cap=capped)
            await session.commit()
        return purged

    async def _due(self, condition: ColumnElement[bool]) -> list[str]:
        async with self.ctx.sessions() as session:
            found = await session.execute(select(Invitation.id).where(condition))
            return list(found.scalars())


async def _reminded(session: AsyncSession, invitation_id: str) -> bool:
    """Whether this survey's reminder was queued already (on any channel)."""
    found = await session.execute(
        select(OutboxMessage.id)
        .where(OutboxMessage.dedup_key == f"{invitation_id}:{REMINDER_KEY}:0")
        .limit(1)
    )
    return found.first() is not None
