"""The application service: a thin facade over the use cases in ``bot/usecases/``.

Agencies register dossiers and report results (``reception``); citizens bind a chat
(``binding``), answer (``conversation``) and use their rights (``rights``); the channels report
deliveries (``delivery``); maintenance closes expired surveys and sends the one reminder
(``lifecycle``). Each use case commits the state change and the outbound messages it causes
together (outbox), under the one lock of the invitation it changes, so an acknowledged answer is
durable and every message is eventually delivered. Raw identifiers only pass through on their
way to being hashed or sealed; none is stored, logged or returned.

This object keeps one name for the whole (the HTTP routes, the channels' funnel, the dispatcher
and the CLI hold it) and the settable parts tests move (``clock``, ``capabilities``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels import Capabilities
from bot.flows.definition import SurveyCatalog, SurveyDefinition
from bot.flows.engine import AnswerEvent, Input
from bot.responses import ResponseRecorder
from bot.schemas import DossierRegistration, RegistrationResult, ResultBatch, ResultBatchOutcome
from bot.usecases import surveys
from bot.usecases.binding import Binding
from bot.usecases.context import ACTIVE, FORGET, Context, Outcome, ServiceError
from bot.usecases.conversation import Conversation
from bot.usecases.delivery import Delivery
from bot.usecases.lifecycle import Lifecycle
from bot.usecases.reception import Reception
from bot.usecases.rights import COMMANDS, Rights
from bot.usecases.surveys import ERASED_LEDGER_STATUS
from settings import Settings
from storage import retention
from storage.coordination import Coordinator
from storage.db import Sessions
from storage.models import Agency, Invitation, utcnow
from storage.pseudonym import KeyRing

__all__ = [
    "ACTIVE",
    "COMMANDS",
    "ERASED_LEDGER_STATUS",
    "FORGET",
    "Outcome",
    "ServiceError",
    "SurveyService",
]


class SurveyService:
    def __init__(
        self,
        sessions: Sessions,
        keyring: KeyRing,
        settings: Settings,
        catalog: SurveyCatalog,
        coordinator: Coordinator,
        capabilities: Mapping[str, Capabilities],
        clock: Callable[[], dt.datetime] = utcnow,
        phone_channels: Sequence[str] = (),
    ) -> None:
        self.ctx = Context(
            sessions, keyring, settings, catalog, coordinator, capabilities, clock,
            tuple(phone_channels),
        )  # fmt: skip
        self.reception = Reception(self.ctx)
        self.binding = Binding(self.ctx)
        self.conversation = Conversation(self.ctx)
        self.rights = Rights(self.ctx)
        self.delivery = Delivery(self.ctx)
        self.lifecycle = Lifecycle(self.ctx)

    # ================================================================ what the use cases share
    @property
    def sessions(self) -> Sessions:
        return self.ctx.sessions

    @property
    def keys(self) -> KeyRing:
        return self.ctx.keys

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def catalog(self) -> SurveyCatalog:
        return self.ctx.catalog

    @property
    def coordinator(self) -> Coordinator:
        return self.ctx.coordinator

    @property
    def responses(self) -> ResponseRecorder:
        return self.ctx.responses

    @property
    def capabilities(self) -> Mapping[str, Capabilities]:
        return self.ctx.capabilities

    @capabilities.setter
    def capabilities(self, value: Mapping[str, Capabilities]) -> None:
        self.ctx.capabilities = value

    @property
    def clock(self) -> Callable[[], dt.datetime]:
        return self.ctx.clock

    @clock.setter
    def clock(self, value: Callable[[], dt.datetime]) -> None:
        self.ctx.clock = value

    @property
    def phone_channels(self) -> Sequence[str]:
        return self.ctx.phone_channels

    @phone_channels.setter
    def phone_channels(self, value: Sequence[str]) -> None:
        self.ctx.phone_channels = tuple(value)

    @property
    def on_enqueue(self) -> Callable[[], None]:
        """Called after a commit that enqueued messages, to wake the dispatcher early."""
        return self.ctx.notify

    @on_enqueue.setter
    def on_enqueue(self, value: Callable[[], None]) -> None:
        self.ctx.notify = value

    # ================================================================ reception
    async def authenticate(self, raw_key: str) -> Agency | None:
        return await self.reception.authenticate(raw_key)

    async def create_api_key(self, agency_code: str, label: str | None = None) -> str:
        return await self.reception.create_api_key(agency_code, label)

    async def register_dossier(
        self, agency: Agency, reg: DossierRegistration
    ) -> RegistrationResult:
        return await self.reception.register_dossier(agency, reg)

    async def report_results(self, agency: Agency, batch: ResultBatch) -> ResultBatchOutcome:
        return await self.reception.report_results(agency, batch)

    # ================================================================ the citizen
    async def bind(self, token: str, channel: str, address: str, language: str | None) -> Outcome:
        return await self.binding.bind(token, channel, address, language)

    async def handle(self, channel: str, address: str, event: Input) -> Outcome:
        return await self.conversation.handle(channel, address, event)

    async def current_question(self, channel: str, address: str) -> tuple[str, str] | None:
        return await self.conversation.current_question(channel, address)

    async def command(self, channel: str, address: str, name: str, arg: str = "") -> Outcome:
        return await self.rights.command(channel, address, name, arg)

    # ================================================================ the channels
    async def mark_delivered(self, invitation_id: str) -> None:
        await self.delivery.mark_delivered(invitation_id)

    async def mark_undeliverable(self, invitation_id: str, for_good: bool = True) -> None:
        await self.delivery.mark_undeliverable(invitation_id, for_good)

    async def record_rating(
        self,
        channel: str,
        tracking_id: str,
        rater: str,
        answers: Callable[[SurveyDefinition], Sequence[AnswerEvent]],
    ) -> bool:
        return await self.delivery.record_rating(channel, tracking_id, rater, answers)

    async def record_receipt(self, tracking_id: str) -> bool:
        return await self.delivery.record_receipt(tracking_id)

    # ================================================================ maintenance
    async def close_expired(self) -> int:
        return await self.lifecycle.close_expired()

    async def send_reminders(self) -> int:
        return await self.lifecycle.send_reminders()

    async def purge_closed(self) -> retention.Purged:
        return await self.lifecycle.purge_closed()

    async def finalize(self, session: AsyncSession, invitation: Invitation, reason: str) -> None:
        """Close a survey in the caller's transaction (the caller holds its lock)."""
        await surveys.finalize(self.ctx, session, invitation, reason)

    async def _opted_out(
        self, session: AsyncSession, contact_digest: str, address_sealed: str | None = None
    ) -> bool:
        return await self.ctx.opted_out(session, contact_digest, address_sealed)
