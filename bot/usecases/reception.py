"""Reception: agencies (API keys), registering a dossier at the counter, reporting its result.

A dossier code becomes ``HMAC(dossier key, agency:code)``; the rating token is returned once and
stored as SHA-256. A reported result creates the one ledger row of the dossier (unique per agency
and dossier: never two surveys) and its invitation, started at once if a chat is bound.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.flows.definition import SurveyDefinition
from bot.schemas import (
    DossierRegistration,
    RegistrationResult,
    ResultBatch,
    ResultBatchOutcome,
)
from bot.usecases import results
from bot.usecases.context import Context, ServiceError
from bot.usecases.surveys import add_phone
from storage.models import (
    Agency,
    ApiKey,
    Dossier,
    SurveyLedger,
)
from storage.pseudonym import new_token, token_digest


class Reception:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def authenticate(self, raw_key: str) -> Agency | None:
        async with self.ctx.sessions() as session:
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
        async with self.ctx.sessions() as session:
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
        """Set-based (``bot.usecases.results``): one bad item never blocks the rest of a day's
        batch, and a batch of 1,000 costs a dozen statements."""
        return await results.report(self.ctx, agency, batch)

    def _survey_for(self, agency: Agency, requested: str | None) -> SurveyDefinition:
        return results.survey_for(self.ctx, agency, requested)

    async def _references(
        self, session: AsyncSession, agency: Agency, procedure: str | None, official: str | None
    ) -> tuple[str | None, str | None]:
        procedures, officials = await results.references(
            session, agency, [procedure] if procedure else [], [official] if official else []
        )
        if procedure and procedure not in procedures:
            raise results.unknown_procedure(procedure)
        if official and official not in officials:
            raise results.unknown_official(official)
        return procedures.get(procedure or ""), officials.get(official or "")

    def _dossier_digests(self, agency: Agency, code: str) -> list[str]:
        return results.dossier_digests(self.ctx, agency, code)

    def _new_dossier(self, agency: Agency, code: str) -> Dossier:
        return results.new_dossier(self.ctx, agency, code)

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
