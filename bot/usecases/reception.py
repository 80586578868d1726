"""Reception: agencies (API keys), registering a dossier at the counter, reporting its result.

A dossier code becomes ``HMAC(dossier key, agency:code)``; the rating token is returned once and
stored as SHA-256. A reported result creates the one ledger row of the dossier (unique per agency
and dossier: never two surveys) and its invitation, started at once if a chat is bound.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BindParameter, Exists, bindparam, exists, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert

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
from storage import api_keys, db, directory
from storage.models import (
    Agency,
    Dossier,
    SurveyLedger,
)
from storage.pseudonym import new_token, token_digest
from storage.upsert import insert_ignoring, table_of


class Reception:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        #: One-statement work (the key's lookup, a new dossier's INSERT) outside a
        #: transaction on PostgreSQL: BEGIN and COMMIT or ROLLBACK were two of its round trips.
        self._direct = db.autocommit(ctx.sessions)

    async def authenticate(self, raw_key: str) -> Agency | None:
        """The key read as it is now, on every request (never cached: a revoked key is refused
        by the next request); one SELECT, no transaction around it."""
        return await api_keys.authenticate(self._direct, raw_key)

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
        """A new dossier in one statement (``_create_unless_known``); a known one (or a closed
        survey) read by one lookup, then updated. Two registrations racing with one code:
        one creates the dossier, the other updates it."""
        now = self.ctx.clock()
        token = new_token()
        expires = now + dt.timedelta(days=self.ctx.settings.rating_token_ttl_days)
        # Without a phone a new dossier is one INSERT: no transaction is needed around it (two
        # round trips fewer). A known dossier, or a phone to add with it, is written in one.
        direct = not reg.phone
        async with (self._direct if direct else self.ctx.sessions)() as session:
            procedure_id, official_id, procedure_survey = await self._references(
                session, agency, reg.procedure_code, reg.official_code
            )
            # Named, else the procedure's, else the unit's, else the default.
            survey = self._survey_for(agency, reg.survey or procedure_survey)
            digests = self._dossier_digests(agency, reg.dossier_code)
            fresh = self._new_dossier(agency, reg.dossier_code)
            row = {
                "id": fresh.id, "agency_id": agency.id, "dossier_hash": fresh.dossier_hash,
                "dossier_key_id": fresh.dossier_key_id, "created_at": fresh.created_at,
                "token_hash": token_digest(token), "token_expires_at": expires,
                "survey_id": survey.id, "procedure_id": procedure_id,
                "official_id": official_id, "received_on": reg.received_at,
                "due_on": reg.due_at, "language": reg.language,
            }  # fmt: skip
            created = await self._create_unless_known(session, agency, digests, row)
            if direct:
                await session.commit()  # SQLite's transaction; nothing to send on PostgreSQL
            else:
                await self._finish(session, agency, reg, digests, created, row)
        if direct and not created:  # known, or raced: read and updated in a transaction
            async with self.ctx.sessions() as session:
                await self._finish(session, agency, reg, digests, created, row)
        return self._registered(token, expires, created)

    async def _finish(
        self,
        session: AsyncSession,
        agency: Agency,
        reg: DossierRegistration,
        digests: Sequence[str],
        created: bool,
        row: dict[str, Any],
    ) -> None:
        """What follows the INSERT, then the commit: a known dossier (the INSERT wrote nothing)
        read by one lookup and given the new token and what the registration says; the phone
        added as a contact."""
        dossier_id: str | None = row["id"]
        if not created:
            dossier_id, surveyed = (
                await session.execute(
                    select(
                        select(Dossier.id)
                        .where(Dossier.agency_id == agency.id, Dossier.dossier_hash.in_(digests))
                        .limit(1)
                        .scalar_subquery(),
                        _surveyed(agency, digests),
                    )
                )
            ).one()
            if dossier_id is None and surveyed:
                raise ServiceError(409, "already_surveyed", "the survey of this dossier has closed")
            if dossier_id is None:  # a racing registration rolled back meanwhile
                raise ServiceError(409, "conflict", "the dossier changed meanwhile; send again")
        dossier = await session.get(Dossier, dossier_id) if not created or reg.phone else None
        if dossier is not None and not created:
            dossier.token_hash = row["token_hash"]
            dossier.token_expires_at = row["token_expires_at"]
            dossier.survey_id = row["survey_id"]
            dossier.procedure_id = row["procedure_id"] or dossier.procedure_id
            dossier.official_id = row["official_id"] or dossier.official_id
            dossier.received_on = reg.received_at or dossier.received_on
            dossier.due_on = reg.due_at or dossier.due_on
            dossier.language = reg.language or dossier.language
        if dossier is not None and reg.phone:
            await add_phone(self.ctx, session, dossier, reg.phone)
        await session.commit()

    def _registered(self, token: str, expires: dt.datetime, created: bool) -> RegistrationResult:
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
    ) -> tuple[str | None, str | None, str | None]:
        """The ids of the codes a report names and the procedure's own survey (read with it);
        a 422 naming every code it may not name (unknown, an official who left or moved, a
        procedure not assigned to this unit)."""
        procedure_found, official_found = await directory.references_for_registration(
            session, agency.id, procedure, official
        )
        found = {
            name: ref
            for name, ref in (
                ("procedure_code", procedure_found),
                ("official_code", official_found),
            )
            if ref is not None
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
            procedure_ref.survey if procedure_ref else None,
        )

    def _dossier_digests(self, agency: Agency, code: str) -> list[str]:
        return results.dossier_digests(self.ctx, agency, code)

    def _new_dossier(self, agency: Agency, code: str) -> Dossier:
        return results.new_dossier(self.ctx, agency, code)

    async def _create_unless_known(
        self, session: AsyncSession, agency: Agency, digests: Sequence[str], row: dict[str, Any]
    ) -> bool:
        """``INSERT … SELECT … WHERE NOT EXISTS … ON CONFLICT DO NOTHING``: the dossier is
        written unless it is known under any listed key or its survey has closed, and a
        concurrent registration of the same code makes this one write nothing. True when
        written: the common case costs one round trip, no lookup first."""
        statement = _create_statement(session, tuple(row))
        written = await session.execute(statement, {**row, "digests": list(digests)})
        return written.first() is not None


#: The registration's INSERT, built once per dialect and column list and executed with bound
#: values: building it per request (a literal per value, two EXISTS) and computing its cache key
#: cost more CPU than the rest of a registration; a reused statement's key is memoised.
_CREATE: dict[tuple[str, tuple[str, ...]], Insert] = {}


def _create_statement(session: AsyncSession, columns: tuple[str, ...]) -> Insert:
    key = (session.get_bind().dialect.name, columns)
    statement = _CREATE.get(key)
    if statement is None:
        table = table_of(Dossier)
        agency_id: BindParameter[str] = bindparam("agency_id")
        digests: BindParameter[list[str]] = bindparam("digests", expanding=True)
        values = select(*(bindparam(c, type_=table.c[c].type).label(c) for c in columns)).where(
            ~exists().where(Dossier.agency_id == agency_id, Dossier.dossier_hash.in_(digests)),
            ~exists().where(
                SurveyLedger.agency_id == agency_id, SurveyLedger.dossier_hash.in_(digests)
            ),
        )
        statement = _CREATE[key] = (
            insert_ignoring(session, Dossier, ["agency_id", "dossier_hash"])
            .from_select(list(columns), values)
            .returning(table.c.id)
        )
    return statement


def _surveyed(agency: Agency, digests: Sequence[str]) -> Exists:
    """Whether this dossier's survey has already been started (its ledger row exists)."""
    return exists().where(
        SurveyLedger.agency_id == agency.id, SurveyLedger.dossier_hash.in_(digests)
    )
