"""The survey a dossier gets when it names none: its procedure's (``Procedure.survey_id``), else
its unit's (``Agency.default_survey``), else the deployment's default.

Registration reads the procedure's with the procedure itself (``storage.directory.
procedure_for_report``: no extra query) and hands it on as if requested, so the unit's and the
default follow in ``bot.usecases.results.survey_for``. Choosing either is a management act (the
dashboard's catalogue page, the CLI), read here in one query for a whole subtree.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from storage.db import Sessions
from storage.models import Agency, Procedure


async def surveys_of(sessions: Sessions, unit_ids: Iterable[str] | None) -> dict[str, str | None]:
    """Each unit's own survey (None: it uses the deployment's default)."""
    query = select(Agency.id, Agency.default_survey)
    if unit_ids is not None:
        query = query.where(Agency.id.in_(list(unit_ids)))
    async with sessions() as session:
        return {unit_id: survey for unit_id, survey in await session.execute(query)}


async def set_survey(sessions: Sessions, unit_id: str, survey_id: str | None) -> str | None:
    """Set the unit's survey (None: back to the default); the previous one, for the audit."""
    async with sessions() as session:
        agency = await session.get(Agency, unit_id)
        if agency is None:
            raise LookupError(unit_id)
        before, agency.default_survey = agency.default_survey, survey_id
        await session.commit()
        return before


async def set_procedure_survey(sessions: Sessions, code: str, survey_id: str | None) -> str | None:
    """Set a procedure's survey (None: its units' own apply); the previous one, for the audit.
    A province-wide choice: the catalogue is the province's."""
    async with sessions() as session:
        procedure = (
            await session.execute(select(Procedure).where(Procedure.code == code))
        ).scalar_one_or_none()
        if procedure is None:
            raise LookupError(code)
        before, procedure.survey_id = procedure.survey_id, survey_id
        await session.commit()
        return before
