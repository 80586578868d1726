"""The survey each unit asks its citizens (``Agency.default_survey``).

A dossier or result that names no survey gets its unit's, else the deployment's default
(``bot.usecases.results.survey_for``); choosing it is a management act (the dashboard, the CLI),
read here in one query for a whole subtree.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from storage.db import Sessions
from storage.models import Agency


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
