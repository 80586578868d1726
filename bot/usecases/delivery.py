"""Delivery: what the channels report back about an invitation.

Sent on a channel that forgets the address once sent (``mark_delivered``), refused for good
(``mark_undeliverable``: fall back to the next channel the citizen bound, or close), and, for a channel that asks its own templated survey, the
platform's rating and delivery receipt (``record_rating``, ``record_receipt``, keyed by the
tracking id sent with the invitation). Each under the invitation's lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlalchemy import delete, update

from bot.flows.definition import SurveyDefinition
from bot.flows.engine import AnswerEvent
from bot.usecases.context import Context
from bot.usecases.surveys import finalize, first_contact, start_on
from storage import outbox
from storage.models import (
    Dossier,
    DossierContact,
    Invitation,
    OutboxMessage,
    SurveyLedger,
    ZnsTracking,
)

log = logging.getLogger(__name__)


class Delivery:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def mark_undeliverable(self, invitation_id: str, for_good: bool = True) -> None:
        """The channel refused for good (blocked bot, OA window closed): fall back to the next
        channel the citizen bound, in the admin's order, while nothing was answered yet;
        otherwise close without retrying. Still one invitation: never two surveys per dossier.

        ``for_good=False``: the retries ran out on passing failures (an outage). Fall back the
        same way if there is somewhere to fall back to; otherwise change nothing: the survey
        stays open and its stalled message waits for an admin's retry until the survey closes."""
        async with self.ctx.hold(invitation_id), self.ctx.sessions() as session:
            invitation = await session.get(Invitation, invitation_id)
            if invitation is None:
                return
            failed_channel = invitation.channel
            await session.execute(
                update(DossierContact)
                .where(
                    DossierContact.dossier_id == invitation.dossier_id,
                    DossierContact.channel == failed_channel,
                )
                .values(failed=True)
            )
            # Whatever else was queued on the refused channel can only fail the same way.
            await outbox.retire_unsent(
                session,
                OutboxMessage.invitation_id == invitation.id,
                OutboxMessage.channel == failed_channel,
                status="dead",
                reason="channel refused",
            )
            dossier = await session.get(Dossier, invitation.dossier_id)
            contact = None
            if dossier is not None and invitation.response_id is None:
                contact = await first_contact(self.ctx, session, dossier)
            ledger = await session.get(SurveyLedger, invitation.ledger_id)
            if not for_good and (contact is None or ledger is None):
                await session.rollback()
                return
            if contact is not None and ledger is not None:
                log.info("invitation falls back from %s to %s", failed_channel, contact.channel)
                await start_on(self.ctx, session, invitation, ledger, contact, fallback=True)
            else:
                await finalize(self.ctx, session, invitation, "undeliverable")
            await session.commit()
        self.ctx.notify()

    async def mark_delivered(self, invitation_id: str) -> None:
        """Accepted by a channel whose address is only needed to send
        (``forget_address_once_sent``: ZNS's phone number): the address is deleted now, and
        ``delivered`` waits for the platform's receipt (or the rating). On every other channel
        the dispatcher records delivery with the "sent" mark (``outbox.sent_then_next``)."""
        async with self.ctx.hold(invitation_id), self.ctx.sessions() as session:
            invitation = await session.get(Invitation, invitation_id)
            if invitation is None:
                return
            capabilities = self.ctx.capabilities.get(invitation.channel or "")
            if capabilities is None or not capabilities.forget_address_once_sent:
                return
            invitation.address_sealed = None
            await session.execute(
                delete(DossierContact).where(
                    DossierContact.dossier_id == invitation.dossier_id,
                    DossierContact.channel == invitation.channel,
                )
            )
            await session.commit()

    async def record_rating(
        self,
        channel: str,
        tracking_id: str,
        rater: str,
        answers: Callable[[SurveyDefinition], Sequence[AnswerEvent]],
    ) -> bool:
        """A rating the platform collected (the ZNS template): the invitation's completed
        response, stored once. False when the tracking id is unknown, already rated, or its
        survey closed or moved to another channel."""
        held = await self._tracked_invitation(tracking_id)
        async with self.ctx.hold(held), self.ctx.sessions() as session:
            tracking = await session.get(ZnsTracking, tracking_id)
            if tracking is None or tracking.status == "rated" or tracking.invitation_id != held:
                return False
            invitation = (
                await session.get(Invitation, tracking.invitation_id)
                if tracking.invitation_id
                else None
            )
            if invitation is None or invitation.channel != channel:
                log.info("tracked rating for a closed survey ignored")
                return False
            definition = self.ctx.definition(invitation)
            await self.ctx.responses.store(session, invitation, channel, rater, answers(definition))
            ledger = await session.get(SurveyLedger, invitation.ledger_id)
            if ledger is not None:
                ledger.delivered = True
            # Closing deletes the tracking row too: the same rating seen again (webhook and
            # reconciliation) then finds no tracking id and is not stored twice.
            await finalize(self.ctx, session, invitation, "completed")
            await session.commit()
        return True

    async def record_receipt(self, tracking_id: str) -> bool:
        """The platform's delivery receipt: the ledger records that the invitation arrived."""
        held = await self._tracked_invitation(tracking_id)
        async with self.ctx.hold(held), self.ctx.sessions() as session:
            tracking = await session.get(ZnsTracking, tracking_id)
            if tracking is None or tracking.invitation_id is None or tracking.invitation_id != held:
                return False
            invitation = await session.get(Invitation, tracking.invitation_id)
            ledger = await session.get(SurveyLedger, invitation.ledger_id) if invitation else None
            if ledger is None:
                return False
            ledger.delivered = True
            if tracking.status == "pending":
                tracking.status = "delivered"
            await session.commit()
        return True

    async def _tracked_invitation(self, tracking_id: str) -> str | None:
        """The invitation a tracking id belongs to (re-checked under its lock)."""
        async with self.ctx.sessions() as session:
            tracking = await session.get(ZnsTracking, tracking_id)
            return tracking.invitation_id if tracking is not None else None
