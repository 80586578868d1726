"""Reception: agencies (API keys), registering a dossier at the counter, reporting its result.

A dossier code becomes ``HMAC(dossier key, agency:code)``; the rating token is returned once and
stored as SHA-256. A reported result creates the one ledger row of the dossier (unique per agency
and dossier: never two surveys) and its invitation, started at once if a chat is bound.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.flows.definition import SurveyDefinition
from bot.i18n import normalise_language
from bot.schemas import (
    DossierRegistration,
    FieldProblem,
    RegistrationResult,
    ResultBatch,
    ResultBatchOutcome,
    ResultItemOutcome,
    ResultReport,
)
from bot.usecases.context import Context, ServiceError
from bot.usecases.surveys import CAPPED, add_phone, engine, first_contact, reach, start_on
from storage import api_keys, directory, invite_cap
from storage.models import (
    Agency,
    Dossier,
    Invitation,
    SurveyLedger,
    new_id,
)
from storage.pseudonym import new_token, normalise_identifier, token_digest


class Reception:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def authenticate(self, raw_key: str) -> Agency | None:
        return await api_keys.authenticate(self.ctx.sessions, raw_key)

    async def create_api_key(self, agency_code: str, label: str | None = None) -> str:
        """A new key, returned once; only its SHA-256 is stored."""
        async with self.ctx.sessions() as session:
            agency = await self._agency_by_code(session, agency_code)
        _, raw = await api_keys.create(self.ctx.sessions, agency.id, label)
        return raw

    async def _agency_by_code(self, session: AsyncSession, code: str) -> Agency:
        agency = (
            await session.execute(select(Agency).where(Agency.code == code))
        ).scalar_one_or_none()
        if agency is None:
            raise ServiceError(404, "unknown_agency", f"no agency with code {code!r}")
        return agency

    async def register_dossier(
        self, agency: Agency, reg: DossierRegistration
    ) -> RegistrationResult:
        now = self.ctx.clock()
        async with self.ctx.sessions() as session:
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
            expires = now + dt.timedelta(days=self.ctx.settings.rating_token_ttl_days)
            dossier.token_hash = token_digest(token)
            dossier.token_expires_at = expires
            dossier.survey_id = survey.id
            dossier.procedure_id = procedure_id or dossier.procedure_id
            dossier.official_id = official_id or dossier.official_id
            dossier.received_on = reg.received_at or dossier.received_on
            dossier.due_on = reg.due_at or dossier.due_on
            dossier.language = reg.language or dossier.language
            if reg.phone:
                await add_phone(self.ctx, session, dossier, reg.phone)
            await session.commit()
        base = self.ctx.settings.effective_public_base_url
        telegram = self.ctx.settings.telegram_bot_username
        return RegistrationResult(
            rating_token=token,
            rating_url=f"{base}/r/{token}",
            qr_svg_url=f"{base}/r/{token}/qr.svg",
            telegram_url=f"https://t.me/{telegram}?start={token}" if telegram else None,
            expires_at=expires,
            created=created,
        )

    async def report_results(self, agency: Agency, batch: ResultBatch) -> ResultBatchOutcome:
        """Each item in its own savepoint: one bad item never blocks the rest of a day's batch."""
        items: list[ResultItemOutcome] = []
        async with self.ctx.sessions() as session:
            for index, report in enumerate(batch.results):
                try:
                    async with session.begin_nested():
                        item = await self._report_one(session, agency, report, index)
                except ServiceError as exc:
                    item = ResultItemOutcome(
                        index=index,
                        status="rejected",
                        error=exc.detail,
                        code=exc.error,
                        fields=[FieldProblem(field=f, problem=p) for f, p in exc.fields] or None,
                    )
                except IntegrityError:
                    item = ResultItemOutcome(index=index, status="duplicate")
                items.append(item)
            await session.commit()
        self.ctx.notify()
        return ResultBatchOutcome(
            accepted=sum(i.status == "survey_created" for i in items),
            duplicates=sum(i.status == "duplicate" for i in items),
            rejected=sum(i.status == "rejected" for i in items),
            items=items,
        )

    async def _report_one(
        self, session: AsyncSession, agency: Agency, report: ResultReport, index: int
    ) -> ResultItemOutcome:
        now = self.ctx.clock()
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
            await add_phone(self.ctx, session, dossier, report.phone)
        ledger = SurveyLedger(
            agency_id=agency.id,
            dossier_hash=dossier.dossier_hash,
            dossier_key_id=dossier.dossier_key_id,
            survey_id=survey.id,
            reported_on=now.date(),
        )
        session.add(ledger)
        await session.flush()  # the unique (agency, dossier) constraint decides races here
        if dossier.contact_hash and await self.ctx.opted_out(
            session, dossier.contact_hash, dossier.address_sealed
        ):
            ledger.status = "opted_out"
            await session.execute(delete(Dossier).where(Dossier.id == dossier.id))
            return ResultItemOutcome(
                index=index, status="survey_created", survey_status="opted_out"
            )
        contact = await first_contact(self.ctx, session, dossier)
        if contact is not None and not await invite_cap.claim(
            session,
            self.ctx.keys,
            await reach(self.ctx, session, dossier),
            now.date(),
            self.ctx.settings.invite_cap_days,
        ):
            # Invited (by this or another agency) within the cap's window: no survey now.
            # The ledger row says so, and coverage counts it; nothing else is kept.
            ledger.status = CAPPED
            await session.execute(delete(Dossier).where(Dossier.id == dossier.id))
            return ResultItemOutcome(index=index, status="survey_created", survey_status=CAPPED)
        language = normalise_language(dossier.language or self.ctx.settings.default_language)
        survey_engine = engine(self.ctx, survey)
        invitation = Invitation(
            id=new_id(),
            ledger_id=ledger.id,
            dossier_id=dossier.id,
            survey_id=survey.id,
            survey_version=survey.version,
            status="waiting",
            language=language,
            state=survey_engine.new_state(secrets.token_hex(3), language),
            timing={
                "received": _iso(dossier.received_on),
                "due": _iso(dossier.due_on),
                "returned": report.returned_at.isoformat(),
                "steps": [
                    {"due": s.due_at.isoformat(), "done": s.done_at.isoformat()}
                    for s in report.steps
                ],
            },
            expires_at=now + dt.timedelta(hours=self.ctx.settings.survey_ttl_hours),
        )
        session.add(invitation)
        if contact is not None:
            await start_on(self.ctx, session, invitation, ledger, contact)
            return ResultItemOutcome(index=index, status="survey_created", survey_status="sent")
        return ResultItemOutcome(
            index=index, status="survey_created", survey_status="waiting_for_binding"
        )

    def _survey_for(self, agency: Agency, requested: str | None) -> SurveyDefinition:
        survey_id = requested or agency.default_survey or self.ctx.settings.default_survey
        if survey_id not in self.ctx.catalog:
            detail = f"no survey named {survey_id!r}"
            raise ServiceError(422, "unknown_survey", detail, [("survey", detail)])
        return self.ctx.catalog.latest(survey_id)

    async def _references(
        self, session: AsyncSession, agency: Agency, procedure: str | None, official: str | None
    ) -> tuple[str | None, str | None]:
        """The ids of the codes a report names; a 422 naming every code it may not name
        (unknown, an official who left or moved, a procedure not assigned to this unit)."""
        found = {
            name: await lookup(session, agency.id, code)
            for name, code, lookup in (
                ("procedure_code", procedure, directory.procedure_for_report),
                ("official_code", official, directory.official_for_report),
            )
            if code
        }
        refused = [(name, ref.refusal) for name, ref in found.items() if ref.refusal]
        if refused:
            raise ServiceError(
                422,
                refused[0][1][0],
                "; ".join(detail for _, (_, detail) in refused),
                [(name, detail) for name, (_, detail) in refused],
            )
        procedure_ref, official_ref = found.get("procedure_code"), found.get("official_code")
        return (
            procedure_ref.id if procedure_ref else None,
            official_ref.id if official_ref else None,
        )

    def _dossier_digests(self, agency: Agency, code: str) -> list[str]:
        value = f"{agency.id}:{normalise_identifier(code)}"
        return [p.digest for p in self.ctx.keys.candidates("dossier", value)]

    def _new_dossier(self, agency: Agency, code: str) -> Dossier:
        pseudonym = self.ctx.keys.pseudonym("dossier", f"{agency.id}:{normalise_identifier(code)}")
        return Dossier(
            id=new_id(),
            agency_id=agency.id,
            dossier_hash=pseudonym.digest,
            dossier_key_id=pseudonym.key_id,
            created_at=self.ctx.clock(),
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


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None
