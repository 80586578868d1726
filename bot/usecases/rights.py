"""The citizen's rights, the same on every channel: /help, /privacy, /stop, /delete (with a
confirmation), /lang. A registry (``COMMANDS``): a command is a name and a handler that says
what to answer; adding one touches nothing else. Unknown names answer /help.

Under the chat's lock, then the locks of every invitation of this chat (/stop closes the open one,
/delete erases them all, /lang changes the open one's language).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels import OutboundMessage
from bot.flows.engine import Prompt, Step
from bot.i18n import N_, gettext, ngettext
from bot.usecases.context import FORGET, Context, Outcome
from bot.usecases.outbound import enqueue_step, flooded
from bot.usecases.surveys import engine_for, finalize
from storage import invite_cap, outbox
from storage.models import Dossier, DossierContact, Invitation, OptOut, Response, new_id

HELP = N_(
    "This bot sends a short, confidential survey after your dossier's result is returned. "
    "Commands: /help, /privacy, /stop, /delete, /lang."
)
PRIVACY = N_(
    "What we hold: your answers, under a code that cannot be traced back to your account without "
    "a secret key that our staff cannot read; no name, phone number or dossier code is stored with "
    "them. Your chat address is kept encrypted only until the survey closes, then deleted. Neither "
    "the agency nor the official can see who rated. Send /delete to erase your answers, /stop to "
    "never be asked again."
)
Buttons = list[tuple[str, str]]


@dataclass
class Call:
    """One command as its handler sees it, in the caller's transaction."""

    rights: Rights
    session: AsyncSession
    channel: str
    address: str
    contacts: Sequence[str]
    invitation: Invitation | None
    arg: str
    language: str


@dataclass
class Answer:
    """What a command answers: messages (text, buttons); ``closing`` when this chat's business
    is over (its replies leave the survey's conversation and the channel may drop its state);
    ``follow_up`` re-asks the open question after a confirmation."""

    say: list[tuple[str, Buttons]] = field(default_factory=list)
    closing: bool = False
    follow_up: Prompt | None = None


Handler = Callable[[Call], Awaitable[Answer]]


async def _help(call: Call) -> Answer:
    return Answer([(gettext(call.language, HELP), [])])


async def _privacy(call: Call) -> Answer:
    return Answer([(gettext(call.language, PRIVACY), [])])


async def _stop(call: Call) -> Answer:
    await call.rights.stop(call.session, call.contacts, call.invitation)
    text = gettext(call.language, "Done: you will not receive surveys from us again.")
    return Answer([(text, [])], closing=True)


async def _delete(call: Call) -> Answer:
    language = call.language
    if call.arg == "yes":
        count = await call.rights.erase(call.session, call.channel, call.address, call.contacts)
        text = ngettext(language, "Erased: {n} response.", "Erased: {n} responses.", count)
        return Answer([(text, [])], closing=True)
    if call.arg == "no":
        return Answer([(gettext(language, "Nothing was erased."), [])])
    question = N_("Erase all the answers you gave through this chat? This cannot be undone.")
    buttons = [
        (gettext(language, "Yes, erase"), "cmd:delete:yes"),
        (gettext(language, "No, keep"), "cmd:delete:no"),
    ]
    return Answer([(gettext(language, question), buttons)])


async def _lang(call: Call) -> Answer:
    if call.arg not in ("vi", "en"):
        buttons = [("Tiếng Việt", "cmd:lang:vi"), ("English", "cmd:lang:en")]
        return Answer([(gettext(call.language, "Choose a language:"), buttons)])
    invitation = call.invitation
    answer = Answer([(gettext(call.arg, "Language set to English."), [])])
    if invitation is not None:
        invitation.language = call.arg
        invitation.state = {**invitation.state, "lang": call.arg}
        answer.follow_up = engine_for(call.rights.ctx, invitation).current_prompt(invitation.state)
    return answer


#: The citizen's commands by name.
COMMANDS: dict[str, Handler] = {
    "help": _help,
    "privacy": _privacy,
    "stop": _stop,
    "delete": _delete,
    "lang": _lang,
}


class Rights:
    def __init__(self, ctx: Context, commands: dict[str, Handler] = COMMANDS) -> None:
        self.ctx = ctx
        self.commands = commands

    async def command(self, channel: str, address: str, name: str, arg: str = "") -> Outcome:
        """Run the command ``name`` (unknown: /help); its replies are queued in order."""
        ctx = self.ctx
        contacts = ctx.contacts(channel, address)
        async with ctx.coordinator.lock(contacts[0]):
            touched = await self._chat_invitations(contacts)
            async with ctx.hold_all(touched), ctx.sessions() as session:
                invitation = await ctx.active_invitation(session, contacts)
                language = invitation.language if invitation else ctx.settings.default_language
                if await flooded(ctx, session, channel, address, contacts[0], language):
                    return Outcome("ignored")
                # Replies join the open survey's conversation (it may still carry a legacy
                # pseudonym) so they are delivered in order with its questions.
                conversation = invitation.contact_hash if invitation else None
                handler = self.commands.get(name, _help)
                call = Call(self, session, channel, address, contacts, invitation, arg, language)
                answer = await handler(call)
                if answer.closing:
                    conversation = None
                sealed = ctx.keys.seal(f"{channel}:{address}")
                for order, (text, buttons) in enumerate(answer.say):
                    message = OutboundMessage(text, buttons)
                    if answer.closing and order == len(answer.say) - 1:
                        message.extra[FORGET] = ctx.question_ids()
                    outbox.enqueue(session, ctx.keys, channel=channel, address_sealed=sealed,
                                   conversation=conversation or contacts[0],
                                   payload=message.to_dict(), priority=outbox.PRIORITY_REPLY,
                                   order=order, now=ctx.clock())  # fmt: skip
                if answer.follow_up is not None and invitation is not None:  # after the reply
                    step = Step(invitation.state, [answer.follow_up])
                    enqueue_step(ctx, session, invitation, step, outbox.PRIORITY_REPLY, new_id())
                await session.commit()
        ctx.notify()
        return Outcome("command")

    async def _chat_invitations(self, contacts: Sequence[str]) -> list[str]:
        """Every invitation a command of this chat may change (looked up before their locks are
        taken; re-read under them): the chat's, and those of dossiers bound here."""
        async with self.ctx.sessions() as session:
            found = await session.execute(select(Invitation.id).where(_of_chat(contacts)))
            return list(found.scalars())

    async def stop(
        self, session: AsyncSession, contacts: Sequence[str], invitation: Invitation | None
    ) -> None:
        """/stop: an opt-out under the namespaced pseudonym, and every binding of this chat still
        under a legacy pseudonym re-keyed to it, so the opt-out is honoured for dossiers bound
        before pseudonyms were namespaced (opt-outs are matched on the stored pseudonym)."""
        current, legacy = contacts[0], list(contacts[1:])
        known = await session.execute(
            select(OptOut.contact_hash).where(OptOut.contact_hash.in_(contacts))
        )
        if current not in set(known.scalars()):  # also when only an older key recorded it
            await session.execute(delete(OptOut).where(OptOut.contact_hash.in_(legacy)))
            session.add(OptOut(contact_hash=current,
                               key_id=self.ctx.keys.known_key_ids("contact")[0],
                               created_on=self.ctx.clock().date()))  # fmt: skip
        for model in (Dossier, DossierContact, Invitation):
            await session.execute(
                update(model)
                .where(model.contact_hash.in_(legacy))
                .values(contact_hash=current)
                .execution_options(synchronize_session=False)
            )
        if invitation is not None:
            await finalize(self.ctx, session, invitation, "stopped")

    async def erase(
        self, session: AsyncSession, channel: str, address: str, contacts: Sequence[str]
    ) -> int:
        """/delete: everything this chat left behind, in the caller's transaction.

        The answers (every response under this chat's rater pseudonyms, and the response of a
        survey open in this chat), every outbox row of its conversations and open surveys, the
        open surveys themselves (invitation, dossier, its contacts; the ledger row is closed as
        an unanswered one), and this chat's binding to dossiers still waiting for a result.
        A closed survey's ledger row stays, and nothing left can find it from this chat: that
        is the design (who was asked and what was answered are never linked).
        Returns how many responses were erased."""
        bound_here = select(DossierContact.dossier_id).where(
            DossierContact.contact_hash.in_(contacts)
        )
        surveys = list(
            (
                await session.execute(
                    select(Invitation).where(
                        (Invitation.contact_hash.in_(contacts))
                        | (Invitation.dossier_id.in_(bound_here))
                    )
                )
            ).scalars()
        )
        await outbox.erase_conversation(session, contacts, [i.id for i in surveys])
        raters = [p.digest for p in self.ctx.keys.channel_candidates("rater", channel, address)]
        responses = [i.response_id for i in surveys if i.response_id]
        for invitation in surveys:
            await finalize(self.ctx, session, invitation, "erased")
        result = await session.execute(
            delete(Response)
            .where(Response.rater_hash.in_(raters) | Response.id.in_(responses))
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            delete(DossierContact)
            .where(DossierContact.contact_hash.in_(contacts))
            .execution_options(synchronize_session=False)
        )
        await invite_cap.forget(session, self.ctx.keys, [f"{channel}:{address}"])
        await session.execute(
            update(Dossier)
            .where(Dossier.contact_hash.in_(contacts))
            .values(contact_hash=None, address_sealed=None)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _of_chat(contacts: Sequence[str]) -> ColumnElement[bool]:
    bound_here = select(DossierContact.dossier_id).where(DossierContact.contact_hash.in_(contacts))
    return (Invitation.contact_hash.in_(contacts)) | (Invitation.dossier_id.in_(bound_here))
