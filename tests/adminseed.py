"""Seed the confidential store directly, for tests of scores, exports and the dashboard."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from bot.runtime import Runtime
from storage.models import Agency, Official, Procedure, Response, SurveyLedger


@dataclass(frozen=True)
class Batch:
    """``count`` responses for one official/procedure with one satisfaction level."""

    count: int
    official: str | None = "CB01"
    procedure: str | None = "1.001234"
    satisfaction: int = 5
    comment: str | None = None
    day: dt.date = dt.date(2026, 10, 15)
    #: "zns-5-star" ratings carry no Circular 01/2018 criteria or score.
    survey: str = "mot-cua"


async def add_agency(runtime: Runtime, code: str, name: str, officials: Sequence[str]) -> Agency:
    async with runtime.sessions() as session:
        agency = Agency(code=code, name=name)
        session.add(agency)
        await session.flush()
        for official in officials:
            session.add(Official(agency_id=agency.id, code=official, name=f"Cán bộ {official}"))
        await session.commit()
        return agency


async def seed(runtime: Runtime, agency_code: str, batches: Sequence[Batch]) -> None:
    async with runtime.sessions() as session:
        agency = (
            await session.execute(select(Agency).where(Agency.code == agency_code))
        ).scalar_one()
        officials = {
            o.code: o.id
            for o in (
                await session.execute(select(Official).where(Official.agency_id == agency.id))
            ).scalars()
        }
        procedures = {p.code: p.id for p in (await session.execute(select(Procedure))).scalars()}
        for batch in batches:
            for _ in range(batch.count):
                level = batch.satisfaction
                points = 2 if level >= 5 else 1 if level >= 3 else 0
                scored = batch.survey == "mot-cua"
                response = Response(
                    agency_id=agency.id,
                    official_id=officials.get(batch.official or ""),
                    procedure_id=procedures.get(batch.procedure or ""),
                    survey_id=batch.survey,
                    survey_version=1,
                    channel="telegram" if scored else "zns",
                    language="vi",
                    answered_on=batch.day,
                    rater_hash=secrets.token_hex(32),
                    rater_key_id="test",
                    complete=True,
                    satisfaction=level,
                    criteria={"1": 2, "3": points, "7": points} if scored else None,
                    score_total=round((2 + 2 * points) * 18 / 6, 1) if scored else None,
                    score_maximum=18.0 if scored else None,
                    score_band=("Xuất sắc" if points == 2 else "Yếu") if scored else None,
                )
                session.add(response)
                await session.flush()
                session.add(response.record_answer("c3", "mot_lan", points))
                if batch.comment is not None:
                    session.add(response.record_answer("comment", None, text=batch.comment))
                session.add(
                    SurveyLedger(
                        agency_id=agency.id,
                        dossier_hash=secrets.token_hex(32),
                        dossier_key_id="test",
                        survey_id="mot-cua",
                        reported_on=batch.day,
                        status="completed",
                        channel="telegram",
                        delivered=True,
                        completed=True,
                    )
                )
        await session.commit()


async def release(
    runtime: Runtime, now: dt.datetime = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
) -> list[str]:
    """Publish every period that is due at ``now`` (by default October 2026, the seeds' month)."""
    return await runtime.publish_releases(now)
