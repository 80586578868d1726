"""Conversation: one inbound answer (a tap or a text) steps the open survey.

Under the chat's lock, then the open invitation's (the one lock every path that changes an
invitation takes): the engine steps, the answer goes to the confidential store, and the
acknowledgement and next prompt to the outbox, in one transaction; a finished survey closes in
the same transaction. The webhook returns 2xx only after that commit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from bot.flows.engine import DONE, Choice, Input
from bot.usecases.context import Context, Outcome
from bot.usecases.outbound import drop_held, enqueue_step, flooded, reply
from bot.usecases.surveys import engine_for, finalize
from storage import outbox
from storage.models import Invitation, new_id

#: Reads of the chat's open invitation under a lock before one is the invitation the lock is
#: of: the first may go to a stale guess (below), and another survey may become the open one in
#: between (then look again, so the invitation changed is always the one held).
ATTEMPTS = 4
#: Chats whose open invitation this process remembers (a guess, checked under its lock).
GUESSES = 10_000


class Conversation:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        #: The chat's (its contact pseudonym's) open invitation as last read under its lock in
        #: this process: the lock to take first. Only a guess: the invitation is read under the
        #: lock and a wrong guess costs one more read, never an answer (another process, a
        #: binding or an expiry may have changed it).
        self._open: OrderedDict[str, str | None] = OrderedDict()

    async def handle(self, channel: str, address: str, event: Input) -> Outcome:
        """One inbound message or tap: the answer and its reply are committed together.

        The open invitation is read once per answer, under its lock: the lock taken is the
        invitation this process last saw open in the chat; when the read under it finds another
        (or none), that one's lock is taken and it is read again. A chat this process has not
        seen is read once without an invitation lock to learn which to take.

        Under the chat's lock, before anything is stepped: the same button tapped again within
        ``SURVEYBOT_TAP_DEDUP_SECONDS`` is the same tap (no second answer, no "earlier
        question" note, nothing sent), and beyond the chat's rate (``SURVEYBOT_CHAT_*``) an
        event is dropped with one "please slow down" reply per notice window."""
        contacts = self.ctx.contacts(channel, address)
        chat = contacts[0]
        async with self.ctx.coordinator.lock(chat):
            held = self._open.get(chat)
            for attempt in range(ATTEMPTS):
                async with self.ctx.hold(held), self.ctx.sessions() as session:
                    invitation = await self.ctx.active_invitation(session, contacts)
                    found = invitation.id if invitation else None
                    if found != held and attempt < ATTEMPTS - 1:
                        held = found
                        continue
                    self._remember(chat, found)
                    outcome = await self._handle_held(
                        session, channel, address, contacts, invitation, event
                    )
                    if outcome.finished:
                        self._remember(chat, None)
                    return outcome
        raise AssertionError("unreachable")  # pragma: no cover

    def _remember(self, chat: str, invitation_id: str | None) -> None:
        self._open[chat] = invitation_id
        self._open.move_to_end(chat)
        while len(self._open) > GUESSES:
            self._open.popitem(last=False)

    async def _handle_held(
        self,
        session: AsyncSession,
        channel: str,
        address: str,
        contacts: Sequence[str],
        invitation: Invitation | None,
        event: Input,
    ) -> Outcome:
        tap: str | None = None
        if isinstance(event, Choice) and not self._is_toggle(invitation, event):
            tap = self.ctx.limit_name("tap", contacts[0], event.tag, event.question_id, event.value)
            if not await self.ctx.coordinator.first_time(tap, self.ctx.settings.tap_dedup_seconds):
                return Outcome("ignored")
        try:
            return await self._handle_locked(session, channel, address, contacts, invitation, event)
        except BaseException:
            if tap is not None:  # not done: a redelivery of this tap must be processed
                await self.ctx.coordinator.forget(tap)
            raise

    async def _handle_locked(
        self,
        session: AsyncSession,
        channel: str,
        address: str,
        contacts: Sequence[str],
        invitation: Invitation | None,
        event: Input,
    ) -> Outcome:
        language = invitation.language if invitation else None
        if await flooded(self.ctx, session, channel, address, contacts[0], language):
            return Outcome("ignored")
        if invitation is None:
            reply(self.ctx, session, channel, address, contacts[0], None,
                        "You have no survey open right now. Thank you!")  # fmt: skip
            await session.commit()
            self.ctx.notify()
            return Outcome("no_survey")
        step = engine_for(self.ctx, invitation).step(invitation.state, event)
        invitation.state = step.state
        if step.answers:
            invitation.status = "in_progress"
            await drop_held(self.ctx, session, invitation)
            await self.ctx.responses.store(session, invitation, channel, address, step.answers)
        enqueue_step(
            self.ctx,
            session,
            invitation,
            step,
            outbox.PRIORITY_REPLY,
            new_id(),
            closing=step.finished,
        )
        if step.finished:
            await finalize(self.ctx, session, invitation, "completed")
        await session.commit()
        self.ctx.notify()
        toast = step.answers[-1].label if step.answers else None
        return Outcome("answered" if step.accepted else "ignored", step.finished, toast)

    def _is_toggle(self, invitation: Invitation | None, event: Choice) -> bool:
        """A tap that toggles an option of the open multiple-choice question: tapping it twice
        means something (on, then off), so it is not de-duplicated (the chat's rate bounds it)."""
        if invitation is None or event.value == DONE:
            return False
        state = invitation.state
        if event.tag != state.get("tag") or event.question_id != state.get("q"):
            return False
        definition = self.ctx.definition(invitation)
        return definition.question(event.question_id).type == "multi"

    async def current_question(self, channel: str, address: str) -> tuple[str, str] | None:
        """(question id, tag) of the open survey, so adapters can tell stale buttons apart."""
        contacts = self.ctx.contacts(channel, address)
        async with self.ctx.sessions() as session:
            invitation = await self.ctx.active_invitation(session, contacts)
            if invitation is None or not invitation.state.get("q"):
                return None
            return invitation.state["q"], invitation.state["tag"]
