"""The confidential store's writer: responses under a rater pseudonym, their answers, their score.

Kept apart from the survey service so that everything written about what a citizen answered
goes through one small module: the rater is only ever a keyed hash, the date only a day, and the
answer rows and the response's export cells are written together (``Response.record_answer``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.flows.definition import SurveyCatalog
from bot.flows.engine import AnswerEvent
from bot.flows.scoring import Bands, ScoreInputs, dossier_inputs, scheme
from storage import unit_criteria
from storage.db import Sessions
from storage.models import Answer, Dossier, Invitation, Response, new_id
from storage.pseudonym import KeyRing


class ResponseRecorder:
    """Writes responses and answers inside the caller's transaction; commits nothing itself."""

    def __init__(
        self,
        keys: KeyRing,
        catalog: SurveyCatalog,
        bands: Mapping[str, Bands],
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.keys = keys
        self.catalog = catalog
        self.bands = bands
        self.clock = clock

    async def store(
        self,
        session: AsyncSession,
        invitation: Invitation,
        channel: str,
        address: str,
        answers: Sequence[AnswerEvent],
    ) -> None:
        """Write answers as they come, so an abandoned survey still counts what was answered.

        The first answer creates the response, keyed by the rater's pseudonym (never the
        address; namespaced by channel, so equal ids on two channels are two raters) and dated
        to the day; it copies the dossier's agency, official and procedure,
        but nothing that names the dossier.
        """
        if invitation.response_id is None:
            dossier = await session.get(Dossier, invitation.dossier_id)
            rater = self.keys.channel_pseudonym("rater", channel, address)
            response = Response(
                id=new_id(),
                agency_id=dossier.agency_id if dossier else "",
                official_id=dossier.official_id if dossier else None,
                procedure_id=dossier.procedure_id if dossier else None,
                survey_id=invitation.survey_id,
                survey_version=invitation.survey_version,
                channel=channel,
                language=invitation.language,
                answered_on=self.clock().date(),
                rater_hash=rater.digest,
                rater_key_id=rater.key_id,
            )
            session.add(response)
            invitation.response_id = response.id
            await session.flush()
        else:
            found = await session.get(Response, invitation.response_id)
            if found is None:  # erased by the citizen between two answers
                return
            response = found
        for answer in answers:
            await session.execute(
                delete(Answer).where(
                    Answer.response_id == response.id,
                    Answer.question_id == answer.question_id,
                )
            )
            session.add(
                response.record_answer(answer.question_id, answer.value, answer.points, answer.text)
            )
            if answer.satisfaction is not None:
                response.satisfaction = answer.satisfaction

    async def score(self, session: AsyncSession, invitation: Invitation, complete: bool) -> None:
        """Score on closing, while the invitation still holds the dossier's dates.

        The dates are reduced to the classes criteria 1-2 define ("early", "on_time", "late")
        and kept with the answer points and the agency-level criteria (the unit's for the
        quarter of the response's day, ``storage.unit_criteria``) as the response's
        ``score_inputs``; the dates themselves are deleted with the invitation, so the store
        never holds when a dossier was served, yet the response can be scored again.
        """
        response = await session.get(Response, invitation.response_id)
        if response is None:
            return
        response.complete = complete
        definition = self.catalog.get(invitation.survey_id, invitation.survey_version)
        rows = (
            await session.execute(select(Answer).where(Answer.response_id == response.id))
        ).scalars()
        criteria_of = {q.id: q.criterion for q in definition.questions if q.criterion}
        points = {
            criteria_of[a.question_id]: a.points for a in rows if a.question_id in criteria_of
        }
        criteria = await unit_criteria.in_force_on(
            session, response.agency_id, response.answered_on
        )
        timing = invitation.timing
        steps = [
            {"due": dt.date.fromisoformat(s["due"]), "done": dt.date.fromisoformat(s["done"])}
            for s in timing.get("steps", [])
        ]
        inputs = dossier_inputs(
            points,
            _date(timing.get("due")),
            _date(timing.get("returned")),
            steps,
            criteria,
            response.satisfaction,
        )
        response.score_scheme = definition.scoring
        response.score_inputs = inputs.to_json()
        apply_score(response, self.bands)


def apply_score(response: Response, bands: Mapping[str, Bands]) -> bool:
    """Score ``response`` from its stored inputs under its scheme; whether anything changed.

    The one place a response's score columns are written, at close and when re-scoring.
    """
    if response.score_scheme is None or response.score_inputs is None:
        return False
    found = scheme(response.score_scheme)
    score = found.score(ScoreInputs.from_json(response.score_inputs), bands[found.id])
    before = (response.criteria, response.score_total, response.score_maximum, response.score_band)
    if score is None:
        after: tuple[Any, ...] = (response.criteria, None, None, None)
    else:
        after = (score.criteria, score.total, score.maximum, score.band)
    if after == before:
        return False
    response.criteria, response.score_total, response.score_maximum, response.score_band = after
    return True


@dataclass(frozen=True, slots=True)
class Rescored:
    responses: int
    changed: int


async def rescore_all(
    sessions: Sessions, bands: Mapping[str, Bands], batch: int = 1000
) -> Rescored:
    """Score every response with kept inputs again, under today's schemes and bands.

    For when a regulation's bands (settings) or a scheme's rules (code) change. Each batch
    commits on its own; the tally triggers move every changed response between its cells.
    """
    seen = changed = 0
    last = ""
    while True:
        async with sessions() as session:
            found = (
                (
                    await session.execute(
                        select(Response)
                        .where(Response.score_inputs.is_not(None), Response.id > last)
                        .order_by(Response.id)
                        .limit(batch)
                    )
                )
                .scalars()
                .all()
            )
            if not found:
                return Rescored(seen, changed)
            for response in found:
                seen += 1
                changed += apply_score(response, bands)
            last = found[-1].id
            await session.commit()


def _date(value: Any) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None
