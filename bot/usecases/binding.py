"""Binding: a citizen opened the receipt's link (``/start <token>``) in a chat.

The chat's address is sealed and its contact pseudonym kept on the dossier; the token is used
once. A survey already waiting for this dossier starts at once; a consumed link opened again mid
survey carries the open survey on. Under the chat's lock, then the locks of the invitations it
may change (the dossier's and the chat's open one).
"""

from __future__ import annotations

from sqlalchemy import delete, select

from bot.flows.engine import Start
from bot.i18n import normalise_language
from bot.usecases.context import Context, Outcome
from bot.usecases.outbound import enqueue_step, flooded, reply
from bot.usecases.surveys import add_contact, attach, engine_for
from storage import invite_cap, outbox
from storage.models import Dossier, Invitation, OptOut, SurveyLedger, new_id
from storage.pseudonym import token_digest


class Binding:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def bind(self, token: str, channel: str, address: str, language: str | None) -> Outcome:
        """A citizen opened the receipt's link in a chat: bind it, start the survey if due."""
        now = self.ctx.clock()
        contact = self.ctx.keys.channel_pseudonym("contact", channel, address)
        contacts = self.ctx.contacts(channel, address)
        async with self.ctx.coordinator.lock(contact.digest):
            touched = await self._touched(token, contacts)
            async with self.ctx.hold_all(touched), self.ctx.sessions() as session:
                if await flooded(self.ctx, session, channel, address, contact.digest, language):
                    return Outcome("ignored")
                dossier = (
                    await session.execute(
                        select(Dossier).where(Dossier.token_hash == token_digest(token))
                    )
                ).scalar_one_or_none()
                if dossier is None or (dossier.token_expires_at and dossier.token_expires_at < now):
                    open_survey = await self.ctx.active_invitation(session, contacts)
                    if open_survey is not None:
                        # The same (now consumed) link opened again mid-survey: carry on, don't scold.
                        step = engine_for(self.ctx, open_survey).step(open_survey.state, Start())
                        enqueue_step(
                            self.ctx, session, open_survey, step, outbox.PRIORITY_REPLY, new_id()
                        )
                        await session.commit()
                        self.ctx.notify()
                        return Outcome("bound")
                    reply(self.ctx, session, channel, address, contact.digest, language,
                                "This rating link is not valid or has expired.")  # fmt: skip
                    await session.commit()
                    self.ctx.notify()
                    return Outcome("invalid_link")
                # Opening a receipt's link is an explicit new request to rate: it lifts an old /stop.
                await session.execute(delete(OptOut).where(OptOut.contact_hash.in_(contacts)))
                dossier.token_hash = None  # single use
                dossier.address_sealed = self.ctx.keys.seal(f"{channel}:{address}")
                dossier.contact_hash = contact.digest
                await add_contact(self.ctx, session, dossier, channel, address)
                if language:
                    dossier.language = normalise_language(language)
                invitation = (
                    await session.execute(
                        select(Invitation).where(Invitation.dossier_id == dossier.id)
                    )
                ).scalar_one_or_none()
                if invitation is not None and invitation.status == "waiting":
                    if language:
                        invitation.language = normalise_language(language)
                        invitation.state = {**invitation.state, "lang": invitation.language}
                    attach(self.ctx, invitation, dossier)
                    # Asked for by the citizen, so never capped; it counts for the next ones.
                    await invite_cap.record(
                        session,
                        self.ctx.keys,
                        [f"{channel}:{address}"],
                        now.date(),
                        self.ctx.settings.invite_cap_days,
                    )
                    ledger = await session.get(SurveyLedger, invitation.ledger_id)
                    if ledger is not None:
                        ledger.status = "sent"
                        ledger.channel = channel
                    step = engine_for(self.ctx, invitation).step(invitation.state, Start())
                    invitation.state = step.state
                    enqueue_step(
                        self.ctx, session, invitation, step, outbox.PRIORITY_REPLY, "start"
                    )
                else:
                    reply(self.ctx, session, channel, address, contact.digest, dossier.language,
                                "Thank you. You will receive a short survey when the result of your "
                                "dossier is returned.")  # fmt: skip
                await session.commit()
        self.ctx.notify()
        return Outcome("bound")

    async def _touched(self, token: str, contacts: list[str]) -> list[str]:
        """The invitations a binding may change: the token's dossier's, and the chat's open one
        (looked up before their locks are taken; re-read under them)."""
        async with self.ctx.sessions() as session:
            found = await session.execute(
                select(Invitation.id)
                .join(Dossier, Dossier.id == Invitation.dossier_id)
                .where(Dossier.token_hash == token_digest(token))
            )
            ids = list(found.scalars())
            open_survey = await self.ctx.active_invitation(session, contacts)
        return [*ids, *([open_survey.id] if open_survey is not None else [])]
