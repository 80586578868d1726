"""The application service: every state change of a survey, each in one transaction.

Agencies register dossiers and report results; citizens bind a chat and answer; maintenance closes
expired surveys and sends the one reminder. Each public method commits the state change and the
outbound messages it causes together (outbox), so an acknowledged answer is durable and every
message is eventually delivered. Raw identifiers only pass through here on their way to being
hashed or sealed; none is stored, logged or returned.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels import Capabilities, OutboundMessage, render
from bot.flows.definition import SurveyCatalog, SurveyDefinition
from bot.flows.engine import (
    DONE,
    AnswerEvent,
    Choice,
    Input,
    Prompt,
    Start,
    Step,
    SurveyEngine,
)
from bot.i18n import N_, gettext, ngettext, normalise_language
from bot.responses import ResponseRecorder
from bot.schemas import (
    DossierRegistration,
    RegistrationResult,
    ResultBatch,
    ResultBatchOutcome,
    ResultItemOutcome,
    ResultReport,
)
from settings import Settings
from storage import outbox, retention
from storage.coordination import Coordinator
from storage.db import Sessions
from storage.models import (
    Agency,
    ApiKey,
    Dossier,
    DossierContact,
    Invitation,
    Official,
    OptOut,
    OutboxMessage,
    Procedure,
    Response,
    SurveyLedger,
    ZnsTracking,
    new_id,
    utcnow,
)
from storage.pseudonym import KeyRing, new_token, normalise_identifier, token_digest
from storage.stats import Thresholds

log = logging.getLogger(__name__)
ACTIVE = ("sent", "in_progress")
#: The channel that sends the ZNS service-rating template by phone, and the survey it answers.
ZNS_CHANNEL = "zns"
ZNS_SURVEY = "zns-5-star"
#: The ledger status of a survey its citizen erased: the same as one that closed unanswered, so
#: the ledger neither says that this citizen took part nor that they asked for erasure.
ERASED_LEDGER_STATUS = "expired"
#: Webhook dedup marks are kept this many replay windows (SURVEYBOT_ZALO_WEBHOOK_MAX_AGE_SECONDS):
#: an older event is refused by its timestamp anyway.
WEBHOOK_WINDOWS = 3
#: Key of ``OutboundMessage.extra`` on the last message of a conversation: the question ids whose
#: per-chat notes the channel drops once it is sent (see TelegramChannel.forget).
FORGET = "forget"


class ServiceError(Exception):
    """A request the service refuses, with the HTTP status an API would answer."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an inbound event did, for adapters (e.g. Telegram's answerCallbackQuery text)."""

    kind: Literal["answered", "ignored", "no_survey", "command", "bound", "invalid_link"]
    finished: bool = False
    toast: str | None = None


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
    ) -> None:
        self.sessions = sessions
        self.keys = keyring
        self.settings = settings
        self.catalog = catalog
        self.coordinator = coordinator
        self.capabilities = capabilities
        self.clock = clock
        #: The confidential store's writer; it reads the clock through this service (tests move it).
        self.responses = ResponseRecorder(
            keyring, catalog, Thresholds.from_settings(settings).bands_mot_cua, lambda: self.clock()
        )
        #: Called after a commit that enqueued messages, to wake the dispatcher early.
        self.on_enqueue: Callable[[], None] = lambda: None

    # ================================================================ agencies and API keys
    async def authenticate(self, raw_key: str) -> Agency | None:
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(Agency)
                    .join(ApiKey, ApiKey.agency_id == Agency.id)
                    .where(ApiKey.key_hash == token_digest(raw_key), ApiKey.revoked_at.is_(None))
                )
            ).scalar_one_or_none()
            return row

    async def create_api_key(self, agency_code: str, label: str | None = None) -> str:
        """A new key, returned once; only its SHA-256 is stored."""
        raw = "sbk_" + secrets.token_urlsafe(32)
        async with self.sessions() as session:
            agency = await self._agency_by_code(session, agency_code)
            session.add(
                ApiKey(
                    agency_id=agency.id, prefix=raw[:10], key_hash=token_digest(raw), label=label
                )
            )
            await session.commit()
        return raw

    async def _agency_by_code(self, session: AsyncSession, code: str) -> Agency:
        agency = (
            await session.execute(select(Agency).where(Agency.code == code))
        ).scalar_one_or_none()
        if agency is None:
            raise ServiceError(404, "unknown_agency", f"no agency with code {code!r}")
        return agency

    # ================================================================ reception
    async def register_dossier(
        self, agency: Agency, reg: DossierRegistration
    ) -> RegistrationResult:
        now = self.clock()
        async with self.sessions() as session:
            survey = self._survey_for(agency, reg.survey)
            procedure_id, official_id = await self._references(
                session, agency, reg.procedure_code, reg.official_code
            )
            digests = self._dossier_digests(agency, reg.dossier_code)
            dossier = await self._dossier(session, agency, digests)
            if dossier is None and await self._ledger(session, agency, digests) is not None:
                raise ServiceError(409, "already_surveyed", "the survey of this dossier has closed")
            created = dossier is None
            if dossier is None:
                dossier = self._new_dossier(agency, reg.dossier_code)
                session.add(dossier)
            token = new_token()
            expires = now + dt.timedelta(days=self.settings.rating_token_ttl_days)
            dossier.token_hash = token_digest(token)
            dossier.token_expires_at = expires
            dossier.survey_id = survey.id
            dossier.procedure_id = procedure_id or dossier.procedure_id
            dossier.official_id = official_id or dossier.official_id
            dossier.received_on = reg.received_at or dossier.received_on
            dossier.due_on = reg.due_at or dossier.due_on
            dossier.language = reg.language or dossier.language
            if reg.phone:
                await self._add_contact(session, dossier, ZNS_CHANNEL, reg.phone)
            await session.commit()
        base = self.settings.effective_public_base_url
        telegram = self.settings.telegram_bot_username
        return RegistrationResult(
            rating_token=token,
            rating_url=f"{base}/r/{token}",
            qr_svg_url=f"{base}/r/{token}/qr.svg",
            telegram_url=f"https://t.me/{telegram}?start={token}" if telegram else None,
            expires_at=expires,
            created=created,
        )

    # ================================================================ results → surveys
    async def report_results(self, agency: Agency, batch: ResultBatch) -> ResultBatchOutcome:
        """Each item in its own savepoint: one bad item never blocks the rest of a day's batch."""
        items: list[ResultItemOutcome] = []
        async with self.sessions() as session:
            for index, report in enumerate(batch.results):
                try:
                    async with session.begin_nested():
                        item = await self._report_one(session, agency, report, index)
                except ServiceError as exc:
                    item = ResultItemOutcome(index=index, status="rejected", error=exc.detail)
                except IntegrityError:
                    item = ResultItemOutcome(index=index, status="duplicate")
                items.append(item)
            await session.commit()
        self.on_enqueue()
        return ResultBatchOutcome(
            accepted=sum(i.status == "survey_created" for i in items),
            duplicates=sum(i.status == "duplicate" for i in items),
            rejected=sum(i.status == "rejected" for i in items),
            items=items,
        )

    async def _report_one(
        self, session: AsyncSession, agency: Agency, report: ResultReport, index: int
    ) -> ResultItemOutcome:
        now = self.clock()
        digests = self._dossier_digests(agency, report.dossier_code)
        if await self._ledger(session, agency, digests) is not None:
            return ResultItemOutcome(index=index, status="duplicate")
        dossier = await self._dossier(session, agency, digests)
        survey = self._survey_for(agency, report.survey or (dossier.survey_id if dossier else None))
        procedure_id, official_id = await self._references(
            session, agency, report.procedure_code, report.official_code
        )
        if dossier is None:
            dossier = self._new_dossier(agency, report.dossier_code)
            session.add(dossier)
        dossier.survey_id = survey.id
        dossier.procedure_id = procedure_id or dossier.procedure_id
        dossier.official_id = official_id or dossier.official_id
        dossier.received_on = report.received_at or dossier.received_on
        dossier.due_on = report.due_at or dossier.due_on
        dossier.language = report.language or dossier.language
        await session.flush()
        if report.phone:
            await self._add_contact(session, dossier, ZNS_CHANNEL, report.phone)
        ledger = SurveyLedger(
            agency_id=agency.id,
            dossier_hash=dossier.dossier_hash,
            dossier_key_id=dossier.dossier_key_id,
            survey_id=survey.id,
            reported_on=now.date(),
        )
        session.add(ledger)
        await session.flush()  # the unique (agency, dossier) constraint decides races here
        if dossier.contact_hash and await self._opted_out(
            session, dossier.contact_hash, dossier.address_sealed
        ):
            ledger.status = "opted_out"
            await session.execute(delete(Dossier).where(Dossier.id == dossier.id))
            return ResultItemOutcome(
                index=index, status="survey_created", survey_status="opted_out"
            )
        language = normalise_language(dossier.language or self.settings.default_language)
        engine = self._engine(survey)
        invitation = Invitation(
            id=new_id(),
            ledger_id=ledger.id,
            dossier_id=dossier.id,
            survey_id=survey.id,
            survey_version=survey.version,
            status="waiting",
            language=language,
            state=engine.new_state(secrets.token_hex(3), language),
            timing={
                "received": _iso(dossier.received_on),
                "due": _iso(dossier.due_on),
                "returned": report.returned_at.isoformat(),
                "steps": [
                    {"due": s.due_at.isoformat(), "done": s.done_at.isoformat()}
                    for s in report.steps
                ],
            },
            expires_at=now + dt.timedelta(hours=self.settings.survey_ttl_hours),
        )
        session.add(invitation)
        contact = await self._first_contact(session, dossier)
        if contact is not None:
            await self._start_on(session, invitation, ledger, contact)
            return ResultItemOutcome(index=index, status="survey_created", survey_status="sent")
        return ResultItemOutcome(
            index=index, status="survey_created", survey_status="waiting_for_binding"
        )

    # ================================================================ binding
    async def bind(self, token: str, channel: str, address: str, language: str | None) -> Outcome:
        """A citizen opened the receipt's link in a chat: bind it, start the survey if due."""
        now = self.clock()
        contact = self.keys.channel_pseudonym("contact", channel, address)
        contacts = self._contacts(channel, address)
        async with self.coordinator.lock(contact.digest), self.sessions() as session:
            if await self._flooded(session, channel, address, contact.digest, language):
                return Outcome("ignored")
            dossier = (
                await session.execute(
                    select(Dossier).where(Dossier.token_hash == token_digest(token))
                )
            ).scalar_one_or_none()
            if dossier is None or (dossier.token_expires_at and dossier.token_expires_at < now):
                open_survey = await self._active_invitation(session, contacts)
                if open_survey is not None:
                    # The same (now consumed) link opened again mid-survey: carry on, don't scold.
                    step = self._engine_for(open_survey).step(open_survey.state, Start())
                    self._enqueue_step(session, open_survey, step, outbox.PRIORITY_REPLY, new_id())
                    await session.commit()
                    self.on_enqueue()
                    return Outcome("bound")
                self._reply(session, channel, address, contact.digest, language,
                            "This rating link is not valid or has expired.")  # fmt: skip
                await session.commit()
                self.on_enqueue()
                return Outcome("invalid_link")
            # Opening a receipt's link is an explicit new request to rate: it lifts an old /stop.
            await session.execute(delete(OptOut).where(OptOut.contact_hash.in_(contacts)))
            dossier.token_hash = None  # single use
            dossier.address_sealed = self.keys.seal(f"{channel}:{address}")
            dossier.contact_hash = contact.digest
            await self._add_contact(session, dossier, channel, address)
            if language:
                dossier.language = normalise_language(language)
            invitation = (
                await session.execute(select(Invitation).where(Invitation.dossier_id == dossier.id))
            ).scalar_one_or_none()
            if invitation is not None and invitation.status == "waiting":
                if language:
                    invitation.language = normalise_language(language)
                    invitation.state = {**invitation.state, "lang": invitation.language}
                self._attach(invitation, dossier)
                ledger = await session.get(SurveyLedger, invitation.ledger_id)
                if ledger is not None:
                    ledger.status = "sent"
                    ledger.channel = channel
                step = self._engine_for(invitation).step(invitation.state, Start())
                invitation.state = step.state
                self._enqueue_step(session, invitation, step, outbox.PRIORITY_REPLY, "start")
            else:
                self._reply(session, channel, address, contact.digest, dossier.language,
                            "Thank you. You will receive a short survey when the result of your "
                            "dossier is returned.")  # fmt: skip
            await session.commit()
        self.on_enqueue()
        return Outcome("bound")

    # ================================================================ conversation
    async def handle(self, channel: str, address: str, event: Input) -> Outcome:
        """One inbound message or tap: the answer and its reply are committed together.

        Under the chat's lock, before anything is stepped: the same button tapped again within
        ``SURVEYBOT_TAP_DEDUP_SECONDS`` is the same tap (no second answer, no "earlier
        question" note, nothing sent), and beyond the chat's rate (``SURVEYBOT_CHAT_*``) an
        event is dropped with one "please slow down" reply per notice window."""
        contacts = self._contacts(channel, address)
        tap: str | None = None
        async with self.coordinator.lock(contacts[0]), self.sessions() as session:
            invitation = await self._active_invitation(session, contacts)
            if isinstance(event, Choice) and not self._is_toggle(invitation, event):
                tap = self._limit_name(
                    "tap", contacts[0], event.tag, event.question_id, event.value
                )
                if not await self.coordinator.first_time(tap, self.settings.tap_dedup_seconds):
                    return Outcome("ignored")
            try:
                return await self._handle_locked(
                    session, channel, address, contacts, invitation, event
                )
            except BaseException:
                if tap is not None:  # not done: a redelivery of this tap must be processed
                    await self.coordinator.forget(tap)
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
        if await self._flooded(session, channel, address, contacts[0], language):
            return Outcome("ignored")
        if invitation is None:
            self._reply(session, channel, address, contacts[0], None,
                        "You have no survey open right now. Thank you!")  # fmt: skip
            await session.commit()
            self.on_enqueue()
            return Outcome("no_survey")
        step = self._engine_for(invitation).step(invitation.state, event)
        invitation.state = step.state
        if step.answers:
            invitation.status = "in_progress"
            await self.responses.store(session, invitation, channel, address, step.answers)
        self._enqueue_step(
            session, invitation, step, outbox.PRIORITY_REPLY, new_id(), closing=step.finished
        )
        if step.finished:
            await self.finalize(session, invitation, "completed")
        await session.commit()
        self.on_enqueue()
        toast = step.answers[-1].label if step.answers else None
        return Outcome("answered" if step.accepted else "ignored", step.finished, toast)

    def _limit_name(self, kind: str, *parts: str) -> str:
        """A Redis name for a chat's flood state that is not its contact pseudonym (an erased
        chat leaves no pseudonym behind): a keyed hash of it, and it expires within a minute."""
        value = "\x1f".join(parts)
        return f"{kind}:{self.keys.pseudonym('contact', f'limit:{kind}:{value}').digest[:32]}"

    def _is_toggle(self, invitation: Invitation | None, event: Choice) -> bool:
        """A tap that toggles an option of the open multiple-choice question: tapping it twice
        means something (on, then off), so it is not de-duplicated (the chat's rate bounds it)."""
        if invitation is None or event.value == DONE:
            return False
        state = invitation.state
        if event.tag != state.get("tag") or event.question_id != state.get("q"):
            return False
        definition = self.catalog.get(invitation.survey_id, invitation.survey_version)
        return definition.question(event.question_id).type == "multi"

    async def _flooded(
        self, session: AsyncSession, channel: str, address: str, conversation: str,
        language: str | None,
    ) -> bool:  # fmt: skip
        """Take one event from the chat's bucket; when it is spent, True, and the first time in
        a notice window one polite reply (committed here) asks the citizen to slow down."""
        settings = self.settings
        if not settings.rate_limits_enabled:
            return False
        decision = await self.coordinator.limiter.take(
            self._limit_name("chat", conversation),
            settings.chat_rate_per_second,
            settings.chat_burst,
        )
        if decision.allowed:
            return False
        window = settings.chat_slowdown_notice_seconds
        if await self.coordinator.first_time(self._limit_name("slowdown", conversation), window):
            self._reply(session, channel, address, conversation, language, SLOW_DOWN)
            await session.commit()
            self.on_enqueue()
        return True

    async def current_question(self, channel: str, address: str) -> tuple[str, str] | None:
        """(question id, tag) of the open survey, so adapters can tell stale buttons apart."""
        contacts = self._contacts(channel, address)
        async with self.sessions() as session:
            invitation = await self._active_invitation(session, contacts)
            if invitation is None or not invitation.state.get("q"):
                return None
            return invitation.state["q"], invitation.state["tag"]

    # ================================================================ citizen commands
    async def command(self, channel: str, address: str, name: str, arg: str = "") -> Outcome:
        """/help, /privacy, /stop, /delete (with confirmation), /lang: the same on every channel."""
        contacts = self._contacts(channel, address)
        async with self.coordinator.lock(contacts[0]), self.sessions() as session:
            invitation = await self._active_invitation(session, contacts)
            language = invitation.language if invitation else self.settings.default_language
            if await self._flooded(session, channel, address, contacts[0], language):
                return Outcome("ignored")
            # Replies join the open survey's conversation (it may still carry a legacy pseudonym)
            # so they are delivered in order with its questions.
            conversation = invitation.contact_hash if invitation else None
            say: list[tuple[str, list[tuple[str, str]]]] = []
            follow_up: Prompt | None = None
            #: The last reply closes this chat's business: the channel may drop its chat state.
            closing = False
            if name == "help":
                say.append((gettext(language, HELP), []))
            elif name == "privacy":
                say.append((gettext(language, PRIVACY), []))
            elif name == "stop":
                await self._stop(session, contacts, invitation)
                conversation, closing = None, True
                say.append(
                    (gettext(language, "Done: you will not receive surveys from us again."), [])
                )
            elif name == "delete" and arg == "yes":
                count = await self._erase(session, channel, address, contacts)
                conversation, closing = None, True
                say.append(
                    (
                        ngettext(
                            language, "Erased: {n} response.", "Erased: {n} responses.", count
                        ),
                        [],
                    )
                )
            elif name == "delete" and arg == "no":
                say.append((gettext(language, "Nothing was erased."), []))
            elif name == "delete":
                question = N_(
                    "Erase all the answers you gave through this chat? This cannot be undone."
                )
                buttons = [
                    (gettext(language, "Yes, erase"), "cmd:delete:yes"),
                    (gettext(language, "No, keep"), "cmd:delete:no"),
                ]
                say.append((gettext(language, question), buttons))
            elif name == "lang" and arg in ("vi", "en"):
                language = arg
                if invitation is not None:
                    invitation.language = arg
                    invitation.state = {**invitation.state, "lang": arg}
                say.append((gettext(language, "Language set to English."), []))
                if invitation is not None:
                    follow_up = self._engine_for(invitation).current_prompt(invitation.state)
            elif name == "lang":
                buttons = [("Tiếng Việt", "cmd:lang:vi"), ("English", "cmd:lang:en")]
                say.append((gettext(language, "Choose a language:"), buttons))
            else:
                say.append((gettext(language, HELP), []))
            sealed = self.keys.seal(f"{channel}:{address}")
            for order, (text, buttons) in enumerate(say):
                message = OutboundMessage(text, buttons)
                if closing and order == len(say) - 1:
                    message.extra[FORGET] = self._question_ids()
                outbox.enqueue(session, self.keys, channel=channel, address_sealed=sealed,
                               conversation=conversation or contacts[0], payload=message.to_dict(),
                               priority=outbox.PRIORITY_REPLY, order=order, now=self.clock())  # fmt: skip
            if follow_up is not None and invitation is not None:  # after the confirmation
                step = Step(invitation.state, [follow_up])
                self._enqueue_step(session, invitation, step, outbox.PRIORITY_REPLY, new_id())
            await session.commit()
        self.on_enqueue()
        return Outcome("command")

    # ================================================================ maintenance
    async def close_expired(self) -> int:
        """Close surveys past their expiry: partial answers stay, addresses are deleted."""
        now = self.clock()
        async with self.sessions() as session:
            expired = (
                (await session.execute(select(Invitation).where(Invitation.expires_at <= now)))
                .scalars()
                .all()
            )
            for invitation in expired:
                await self.finalize(session, invitation, "expired")
            # Dossiers never reported whose link expired long ago: nothing left to keep.
            stale = now - dt.timedelta(days=self.settings.rating_token_ttl_days)
            orphan_ids = select(Invitation.dossier_id)
            await session.execute(
                delete(Dossier).where(Dossier.created_at < stale, Dossier.id.not_in(orphan_ids))
            )
            await session.commit()
        return len(expired)

    async def send_reminders(self) -> int:
        now = self.clock()
        sent = 0
        async with self.sessions() as session:
            due = (
                (
                    await session.execute(
                        select(Invitation).where(
                            Invitation.status.in_(ACTIVE), Invitation.reminder_due_at <= now
                        )
                    )
                )
                .scalars()
                .all()
            )
            for invitation in due:
                invitation.reminder_due_at = None
                prompt = self._engine_for(invitation).current_prompt(invitation.state)
                text = N_("A reminder: your short survey is still open. It takes under a minute.")
                prompts = [Prompt(gettext(invitation.language, text))]
                prompts += [prompt] if prompt else []
                step = Step(invitation.state, prompts)
                self._enqueue_step(
                    session, invitation, step, outbox.PRIORITY_INVITATION, "reminder"
                )
                sent += 1
            await session.commit()
        if sent:
            self.on_enqueue()
        return sent

    async def mark_undeliverable(self, invitation_id: str) -> None:
        """The channel refused for good (blocked bot, OA window closed): fall back to the next
        channel the citizen bound, in the admin's order, while nothing was answered yet;
        otherwise close without retrying. Still one invitation: never two surveys per dossier."""
        async with self.coordinator.lock(f"invitation:{invitation_id}"), self.sessions() as session:
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
                contact = await self._first_contact(session, dossier)
            ledger = await session.get(SurveyLedger, invitation.ledger_id)
            if contact is not None and ledger is not None:
                log.info("invitation falls back from %s to %s", failed_channel, contact.channel)
                await self._start_on(session, invitation, ledger, contact, fallback=True)
            else:
                await self.finalize(session, invitation, "undeliverable")
            await session.commit()
        self.on_enqueue()

    async def mark_delivered(self, invitation_id: str) -> None:
        """Accepted by the channel. For ZNS the phone is no longer needed: it is deleted now, and
        ``delivered`` waits for Zalo's delivery receipt (or the rating)."""
        async with self.sessions() as session:
            invitation = await session.get(Invitation, invitation_id)
            if invitation is None:
                return
            if invitation.channel == ZNS_CHANNEL:
                invitation.address_sealed = None
                await session.execute(
                    delete(DossierContact).where(
                        DossierContact.dossier_id == invitation.dossier_id,
                        DossierContact.channel == ZNS_CHANNEL,
                    )
                )
                await session.commit()
                return
            ledger = await session.get(SurveyLedger, invitation.ledger_id)
            if ledger is not None and not ledger.delivered:
                ledger.delivered = True
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
        key = hashlib.sha256(tracking_id.encode()).hexdigest()
        async with self.coordinator.lock(f"zns:{key}"), self.sessions() as session:
            tracking = await session.get(ZnsTracking, tracking_id)
            if tracking is None or tracking.status == "rated":
                return False
            invitation = (
                await session.get(Invitation, tracking.invitation_id)
                if tracking.invitation_id
                else None
            )
            if invitation is None or invitation.channel != channel:
                log.info("tracked rating for a closed survey ignored")
                return False
            definition = self.catalog.get(invitation.survey_id, invitation.survey_version)
            await self.responses.store(session, invitation, channel, rater, answers(definition))
            ledger = await session.get(SurveyLedger, invitation.ledger_id)
            if ledger is not None:
                ledger.delivered = True
            # Closing deletes the tracking row too: the same rating seen again (webhook and
            # reconciliation) then finds no tracking id and is not stored twice.
            await self.finalize(session, invitation, "completed")
            await session.commit()
        return True

    async def record_receipt(self, tracking_id: str) -> bool:
        """The platform's delivery receipt: the ledger records that the invitation arrived."""
        async with self.sessions() as session:
            tracking = await session.get(ZnsTracking, tracking_id)
            if tracking is None or tracking.invitation_id is None:
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

    async def _stop(
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
                               key_id=self.keys.known_key_ids("contact")[0],
                               created_on=self.clock().date()))  # fmt: skip
        for model in (Dossier, DossierContact, Invitation):
            await session.execute(
                update(model)
                .where(model.contact_hash.in_(legacy))
                .values(contact_hash=current)
                .execution_options(synchronize_session=False)
            )
        if invitation is not None:
            await self.finalize(session, invitation, "stopped")

    async def _erase(
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
        raters = [p.digest for p in self.keys.channel_candidates("rater", channel, address)]
        responses = [i.response_id for i in surveys if i.response_id]
        for invitation in surveys:
            await self.finalize(session, invitation, "erased")
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
        await session.execute(
            update(Dossier)
            .where(Dossier.contact_hash.in_(contacts))
            .values(contact_hash=None, address_sealed=None)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def purge_closed(self) -> retention.Purged:
        """Forget what closed surveys left for delivery and de-duplication (maintenance loop)."""
        async with self.sessions() as session:
            purged = await retention.purge(
                session,
                now=self.clock(),
                outbox_retention=dt.timedelta(hours=self.settings.outbox_retention_hours),
                webhook_window=dt.timedelta(
                    seconds=WEBHOOK_WINDOWS * self.settings.zalo_webhook_max_age_seconds
                ),
            )
            await session.commit()
        return purged

    # ================================================================ internals
    def _contacts(self, channel: str, address: str) -> list[str]:
        """Every pseudonym this chat may be stored under, the one new records use first."""
        return [p.digest for p in self.keys.channel_candidates("contact", channel, address)]

    def _question_ids(self, invitation: Invitation | None = None) -> list[str]:
        """Every question id a chat may hold notes for: the open survey's, and every survey's."""
        definitions = [self.catalog.latest(survey) for survey in self.catalog.ids()]
        if invitation is not None:
            definitions.append(self.catalog.get(invitation.survey_id, invitation.survey_version))
        return sorted({q.id for d in definitions for q in d.questions})

    def _survey_for(self, agency: Agency, requested: str | None) -> SurveyDefinition:
        survey_id = requested or agency.default_survey or self.settings.default_survey
        if survey_id not in self.catalog:
            raise ServiceError(422, "unknown_survey", f"no survey named {survey_id!r}")
        return self.catalog.latest(survey_id)

    def _engine(self, survey: SurveyDefinition) -> SurveyEngine:
        return SurveyEngine(survey, self.settings.max_free_text_chars)

    def _engine_for(self, invitation: Invitation) -> SurveyEngine:
        return self._engine(self.catalog.get(invitation.survey_id, invitation.survey_version))

    async def _references(
        self, session: AsyncSession, agency: Agency, procedure: str | None, official: str | None
    ) -> tuple[str | None, str | None]:
        procedure_id = official_id = None
        if procedure:
            procedure_id = (
                await session.execute(select(Procedure.id).where(Procedure.code == procedure))
            ).scalar_one_or_none()
            if procedure_id is None:
                raise ServiceError(
                    422, "unknown_procedure", f"no procedure with code {procedure!r}"
                )
        if official:
            official_id = (
                await session.execute(
                    select(Official.id).where(
                        Official.agency_id == agency.id, Official.code == official
                    )
                )
            ).scalar_one_or_none()
            if official_id is None:
                raise ServiceError(
                    422, "unknown_official", f"no official with code {official!r} in this agency"
                )
        return procedure_id, official_id

    def _dossier_digests(self, agency: Agency, code: str) -> list[str]:
        value = f"{agency.id}:{normalise_identifier(code)}"
        return [p.digest for p in self.keys.candidates("dossier", value)]

    def _new_dossier(self, agency: Agency, code: str) -> Dossier:
        pseudonym = self.keys.pseudonym("dossier", f"{agency.id}:{normalise_identifier(code)}")
        return Dossier(
            id=new_id(),
            agency_id=agency.id,
            dossier_hash=pseudonym.digest,
            dossier_key_id=pseudonym.key_id,
            created_at=self.clock(),
        )

    async def _dossier(
        self, session: AsyncSession, agency: Agency, digests: Sequence[str]
    ) -> Dossier | None:
        return (
            await session.execute(
                select(Dossier).where(
                    Dossier.agency_id == agency.id, Dossier.dossier_hash.in_(digests)
                )
            )
        ).scalar_one_or_none()

    async def _ledger(
        self, session: AsyncSession, agency: Agency, digests: Sequence[str]
    ) -> SurveyLedger | None:
        return (
            await session.execute(
                select(SurveyLedger).where(
                    SurveyLedger.agency_id == agency.id, SurveyLedger.dossier_hash.in_(digests)
                )
            )
        ).scalar_one_or_none()

    async def _opted_out(
        self, session: AsyncSession, contact_digest: str, address_sealed: str | None = None
    ) -> bool:
        """Whether this contact said /stop, under every listed key: the stored pseudonym and,
        when the sealed address is at hand, its pseudonyms under every key (an opt-out recorded
        before a key rotation is honoured after it)."""
        digests = {contact_digest}
        if address_sealed:
            try:
                channel, _, address = self.keys.open(address_sealed).partition(":")
                digests.update(self._contacts(channel, address))
            except ValueError:  # sealed under a retired key: the stored pseudonym decides
                pass
        found = await session.execute(
            select(OptOut.contact_hash).where(OptOut.contact_hash.in_(digests)).limit(1)
        )
        return found.first() is not None

    async def _active_invitation(
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

    async def _add_contact(
        self, session: AsyncSession, dossier: Dossier, channel: str, address: str
    ) -> None:
        """Remember (sealed) one more way to reach the citizen of this dossier; a re-bind of the
        same channel replaces the old address and clears an earlier refusal."""
        existing = (
            await session.execute(
                select(DossierContact).where(
                    DossierContact.dossier_id == dossier.id, DossierContact.channel == channel
                )
            )
        ).scalar_one_or_none()
        contact = existing or DossierContact(id=new_id(), dossier_id=dossier.id, channel=channel)
        contact.address_sealed = self.keys.seal(f"{channel}:{address}")
        contact.contact_hash = self.keys.channel_pseudonym("contact", channel, address).digest
        contact.failed = False
        if existing is None:
            session.add(contact)
        await session.flush()

    async def _first_contact(
        self, session: AsyncSession, dossier: Dossier
    ) -> DossierContact | None:
        """The best reachable channel the citizen bound: admin order, configured channels only,
        never one that refused for good or whose contact said /stop."""
        rows = list(
            (
                await session.execute(
                    select(DossierContact).where(DossierContact.dossier_id == dossier.id)
                )
            ).scalars()
        )
        known = {row.channel for row in rows}
        rows = [row for row in rows if not row.failed]
        if dossier.address_sealed and dossier.contact_hash:
            channel = self.keys.open(dossier.address_sealed).split(":", 1)[0]
            if channel not in known:  # bound before contacts were recorded
                rows.append(DossierContact(dossier_id=dossier.id, channel=channel,
                                           address_sealed=dossier.address_sealed,
                                           contact_hash=dossier.contact_hash, failed=False))  # fmt: skip
        order = self.settings.channel_priority
        rows = [r for r in rows if r.channel in self.capabilities]
        rows.sort(key=lambda r: order.index(r.channel) if r.channel in order else len(order))
        for row in rows:
            if not await self._opted_out(session, row.contact_hash, row.address_sealed):
                return row
        return None

    async def _start_on(
        self,
        session: AsyncSession,
        invitation: Invitation,
        ledger: SurveyLedger,
        contact: DossierContact,
        fallback: bool = False,
    ) -> None:
        """Send the invitation on ``contact``'s channel; the ledger records which channel."""
        invitation.address_sealed = contact.address_sealed
        invitation.contact_hash = contact.contact_hash
        invitation.channel = contact.channel
        invitation.status = "sent"
        ledger.status = "sent"
        ledger.channel = contact.channel
        ledger.delivered = False
        if contact.channel == ZNS_CHANNEL:
            # The ZNS rating template is its own survey (stars, chips, note) answered in Zalo.
            survey = self.catalog.latest(ZNS_SURVEY)
            invitation.survey_id, invitation.survey_version = survey.id, survey.version
            invitation.state = self._engine(survey).new_state(
                secrets.token_hex(3), invitation.language
            )
            ledger.survey_id = survey.id
            invitation.reminder_due_at = None
            tracking = ZnsTracking(tracking_id=secrets.token_hex(16), invitation_id=invitation.id)
            session.add(tracking)
            dossier = await session.get(Dossier, invitation.dossier_id)
            agency = await session.get(Agency, dossier.agency_id) if dossier else None
            procedure = (
                await session.get(Procedure, dossier.procedure_id)
                if dossier and dossier.procedure_id
                else None
            )
            params = {
                "agency": agency.name if agency else "",
                "procedure": procedure.name if procedure else "",
            }
            message = OutboundMessage("", extra={"zns_tracking_id": tracking.tracking_id,
                                                 "zns_params": params})  # fmt: skip
            outbox.enqueue(session, self.keys, channel=ZNS_CHANNEL,
                           address_sealed=contact.address_sealed,
                           conversation=contact.contact_hash, payload=message.to_dict(),
                           priority=outbox.PRIORITY_INVITATION, dedup_key=f"{invitation.id}:zns",
                           invitation_id=invitation.id, now=self.clock())  # fmt: skip
            return
        invitation.reminder_due_at = self.clock() + dt.timedelta(
            hours=self.settings.reminder_after_hours
        )
        engine = self._engine_for(invitation)
        if fallback:
            invitation.state = engine.new_state(secrets.token_hex(3), invitation.language)
        step = engine.step(invitation.state, Start())
        invitation.state = step.state
        dedup = f"start-{contact.channel}" if fallback else "start"
        self._enqueue_step(session, invitation, step, outbox.PRIORITY_INVITATION, dedup)

    def _attach(self, invitation: Invitation, dossier: Dossier) -> None:
        assert dossier.address_sealed is not None
        invitation.address_sealed = dossier.address_sealed
        invitation.contact_hash = dossier.contact_hash
        invitation.channel = self.keys.open(dossier.address_sealed).split(":", 1)[0]
        invitation.status = "sent"
        invitation.reminder_due_at = self.clock() + dt.timedelta(
            hours=self.settings.reminder_after_hours
        )

    def _enqueue_step(
        self,
        session: AsyncSession,
        invitation: Invitation,
        step: Step,
        priority: int,
        dedup: str,
        closing: bool = False,
    ) -> None:
        """Queue a step's acknowledgements and prompts; ``closing`` marks the last message as the
        end of the conversation, after which the channel drops its chat state (``FORGET``)."""
        assert invitation.address_sealed and invitation.contact_hash and invitation.channel
        capabilities = self.capabilities[invitation.channel]
        language = step.state["lang"]
        messages: list[OutboundMessage] = []
        if capabilities.edits:
            for answer in step.answers:
                label = gettext(language, "Answer: {answer}", answer=answer.label)
                messages.append(OutboundMessage(label, question_id=answer.question_id,
                                                extra={"ack": True}))  # fmt: skip
        messages += [render(p, capabilities, language) for p in step.prompts]
        if closing and messages:
            messages[-1].extra[FORGET] = self._question_ids(invitation)
        for order, message in enumerate(messages):
            outbox.enqueue(
                session,
                self.keys,
                channel=invitation.channel,
                address_sealed=invitation.address_sealed,
                conversation=invitation.contact_hash,
                payload=message.to_dict(),
                priority=priority,
                dedup_key=f"{invitation.id}:{dedup}:{order}",
                invitation_id=invitation.id,
                order=order,
                now=self.clock(),
            )

    def _reply(
        self, session: AsyncSession, channel: str, address: str, conversation: str,
        language: str | None, message: str,
    ) -> None:  # fmt: skip
        text = gettext(normalise_language(language or self.settings.default_language), message)
        outbox.enqueue(session, self.keys, channel=channel,
                       address_sealed=self.keys.seal(f"{channel}:{address}"),
                       conversation=conversation, payload=OutboundMessage(text).to_dict(),
                       priority=outbox.PRIORITY_REPLY, now=self.clock())  # fmt: skip

    async def finalize(self, session: AsyncSession, invitation: Invitation, reason: str) -> None:
        """Close a survey: score what was answered, then delete every operational trace.

        An erased survey's ledger row is closed as an unanswered one (``ERASED_LEDGER_STATUS``):
        it still stops a second survey of the dossier, and no longer says that its citizen took
        part. Messages not yet sent are dropped unless the survey was completed (its last
        acknowledgement and thank-you still go out)."""
        ledger = await session.get(SurveyLedger, invitation.ledger_id)
        if ledger is not None:
            ledger.status = ERASED_LEDGER_STATUS if reason == "erased" else reason
            ledger.completed = reason == "completed"
        if invitation.response_id and reason != "erased":
            await self.responses.score(session, invitation, complete=reason == "completed")
        if reason != "completed":
            await outbox.retire_unsent(
                session,
                OutboxMessage.invitation_id == invitation.id,
                status="cancelled",
                reason=f"survey {reason}",
                now=self.clock(),
            )
        # A ZNS rating arriving after this finds no tracking row and is ignored, as before.
        await session.execute(delete(ZnsTracking).where(ZnsTracking.invitation_id == invitation.id))
        await session.execute(delete(Invitation).where(Invitation.id == invitation.id))
        await session.execute(delete(Dossier).where(Dossier.id == invitation.dossier_id))


SLOW_DOWN = N_(
    "You are sending messages faster than I can read them. Please wait a moment, then send your "
    "answer again."
)
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


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None
