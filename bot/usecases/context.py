"""What every use case shares: the stores, the clock, the channels' capabilities, the locks."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels import Capabilities
from bot.flows.definition import SurveyCatalog, SurveyDefinition
from bot.responses import ResponseRecorder
from settings import Settings
from storage import schedule
from storage.coordination import Coordinator, invitation_lock
from storage.db import Sessions
from storage.models import Invitation, OptOut
from storage.pseudonym import KeyRing
from storage.stats import Thresholds

#: An invitation the citizen can answer.
ACTIVE = ("sent", "in_progress")
#: Key of ``OutboundMessage.extra`` on the last message of a conversation: the question ids whose
#: per-chat notes the channel drops once it is sent (see TelegramChannel.forget).
FORGET = "forget"


class ServiceError(Exception):
    """A request the service refuses, with the HTTP status an API would answer."""

    def __init__(
        self, status: int, error: str, detail: str, fields: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        #: (field, problem) pairs an API answers in ``fields``: which input was wrong, and why.
        self.fields = list(fields)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an inbound event did, for adapters (e.g. Telegram's answerCallbackQuery text)."""

    kind: Literal["answered", "ignored", "no_survey", "command", "bound", "invalid_link"]
    finished: bool = False
    toast: str | None = None


@dataclass
class Context:
    """The stores and settings the use cases run on. ``capabilities``, ``clock`` and ``notify``
    are set by the composition (and moved by tests) after construction."""

    sessions: Sessions
    keys: KeyRing
    settings: Settings
    catalog: SurveyCatalog
    coordinator: Coordinator
    capabilities: Mapping[str, Capabilities]
    clock: Callable[[], dt.datetime]
    #: Channels whose addresses are phone numbers given at reception (declared by the channel
    #: packages): a phone in a registration becomes a contact on each.
    phone_channels: Sequence[str] = ()
    #: Called after a commit that enqueued messages, to wake the dispatcher early.
    notify: Callable[[], None] = field(default=lambda: None)
    responses: ResponseRecorder = field(init=False)

    def __post_init__(self) -> None:
        #: The confidential store's writer; it reads the clock through here (tests move it).
        self.responses = ResponseRecorder(
            self.keys,
            self.catalog,
            Thresholds.from_settings(self.settings).bands,
            lambda: self.clock(),
        )

    # ------------------------------------------------------------------ the one lock
    @contextlib.asynccontextmanager
    async def hold(self, invitation_id: str | None) -> AsyncIterator[None]:
        """The invitation's lock (nothing to hold for no invitation)."""
        if invitation_id is None:
            yield
            return
        async with invitation_lock(self.coordinator, invitation_id):
            yield

    @contextlib.asynccontextmanager
    async def hold_all(self, invitation_ids: Iterable[str]) -> AsyncIterator[None]:
        """Several invitations' locks, always in the same order."""
        async with contextlib.AsyncExitStack() as stack:
            for invitation_id in sorted(set(invitation_ids)):
                await stack.enter_async_context(invitation_lock(self.coordinator, invitation_id))
            yield

    # ------------------------------------------------------------------ lookups
    def contacts(self, channel: str, address: str) -> list[str]:
        """Every pseudonym this chat may be stored under, the one new records use first."""
        return [p.digest for p in self.keys.channel_candidates("contact", channel, address)]

    def definition(self, invitation: Invitation) -> SurveyDefinition:
        return self.catalog.get(invitation.survey_id, invitation.survey_version)

    def question_ids(self, invitation: Invitation | None = None) -> list[str]:
        """Every question id a chat may hold notes for: the open survey's, and every survey's."""
        definitions = [self.catalog.latest(survey) for survey in self.catalog.ids()]
        if invitation is not None:
            definitions.append(self.definition(invitation))
        return sorted({q.id for d in definitions for q in d.questions})

    def limit_name(self, kind: str, *parts: str) -> str:
        """A Redis name for a chat's flood state that is not its contact pseudonym (an erased
        chat leaves no pseudonym behind): a keyed hash of it, and it expires within a minute."""
        value = "\x1f".join(parts)
        return f"{kind}:{self.keys.pseudonym('contact', f'limit:{kind}:{value}').digest[:32]}"

    def quiet_until(self) -> dt.datetime | None:
        """The end of the quiet hours now falls in (``storage.schedule``), else None: what the
        service sends on its own initiative (invitations, reminders) waits for it."""
        return schedule.quiet_until(self.settings, self.clock())

    async def active_invitation(
        self, session: AsyncSession, contacts: Sequence[str]
    ) -> Invitation | None:
        return (
            await session.execute(
                select(Invitation)
                .where(Invitation.contact_hash.in_(contacts), Invitation.status.in_(ACTIVE))
                .order_by(Invitation.created_at.desc())
                .limit(1)
            )
        ).scalar_one_or_none()

    async def opted_out(
        self, session: AsyncSession, contact_digest: str, address_sealed: str | None = None
    ) -> bool:
        """Whether this contact said /stop, under every listed key: the stored pseudonym and,
        when the sealed address is at hand, its pseudonyms under every key (an opt-out recorded
        before a key rotation is honoured after it)."""
        digests = self.opt_out_digests(contact_digest, address_sealed)
        found = await session.execute(
            select(OptOut.contact_hash).where(OptOut.contact_hash.in_(digests)).limit(1)
        )
        return found.first() is not None

    def opt_out_digests(self, contact_digest: str, address_sealed: str | None) -> set[str]:
        """The pseudonyms an opt-out of this contact may be stored under (``opted_out``'s
        lookup; a batch looks up all of its contacts' at once)."""
        digests = {contact_digest}
        if address_sealed:
            try:
                channel, _, address = self.keys.open(address_sealed).partition(":")
                digests.update(self.contacts(channel, address))
            except ValueError:  # sealed under a retired key: the stored pseudonym decides
                pass
        return digests
