"""A realistic month for the row-level export tests, and what the agency knows about it.

Unequal loads as a one-stop desk has them: officials with 1 to 30 ratings, a few procedures
with most of the dossiers, most citizens on Telegram and some on Zalo, the web or ZNS (whose
rating template is its own survey), a few in English, about a third leaving a comment.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from bot.runtime import Runtime
from storage.models import Agency, Official, Procedure, Response

MONTH = [dt.date(2026, 10, day) for day in range(1, 32)]
#: ratings per official of the first agency: 1 to 30
LOADS = {
    "CB01": 30,
    "CB02": 25,
    "CB03": 20,
    "CB04": 15,
    "CB05": 12,
    "CB06": 10,
    "CB07": 9,
    "CB08": 8,
    "CB11": 5,
    "CB12": 3,
    "CB13": 2,
    "CB14": 1,
}
PROCEDURES = {"1.000001": 50, "1.000002": 25, "1.000003": 12, "1.000004": 8, "1.000005": 5}
CHANNELS = {"telegram": 60, "zalo_oa": 25, "web": 10, "zns": 5}
COMMENTS = (
    "Cán bộ nhiệt tình, hướng dẫn rõ ràng",
    "Phải chờ lâu quá",
    '=HYPERLINK("http://x","bấm")',
    '\x01=HYPERLINK("http://x")',
    "＝1+1",
    "＋84 hỏi lại",
    "－ thái độ chưa tốt",
    "＠SUM(A1)",
    "\u200b=cmd|' /C calc'!A0",
    "  +1 lần nữa",
    "\t-2",
)


@dataclass(frozen=True, slots=True)
class Truth:
    """One response as the agency knows its dossier, and what the citizen answered."""

    agency: str
    official: str
    procedure: str
    channel: str
    language: str
    day: dt.date
    survey: str
    satisfaction: int
    comment: str | None


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


async def add_units(
    runtime: Runtime, agency_code: str, officials: Sequence[str], procedures: Sequence[str]
) -> None:
    async with runtime.sessions() as session:
        agency = (
            await session.execute(select(Agency).where(Agency.code == agency_code))
        ).scalar_one_or_none()
        if agency is None:
            agency = Agency(code=agency_code, name=f"UBND {agency_code}")
            session.add(agency)
            await session.flush()
        have = {
            o.code
            for o in (
                await session.execute(select(Official).where(Official.agency_id == agency.id))
            ).scalars()
        }
        for code in officials:
            if code not in have:
                session.add(Official(agency_id=agency.id, code=code, name=f"Cán bộ {code}"))
        known = {p.code for p in (await session.execute(select(Procedure))).scalars()}
        for code in procedures:
            if code not in known:
                session.add(Procedure(code=code, name=f"Thủ tục {code}"))
        await session.commit()


async def store(runtime: Runtime, truths: Sequence[Truth]) -> None:
    """The responses as the bot stores them (answer rows and export cells together)."""
    async with runtime.sessions() as session:
        agencies = {a.code: a.id for a in (await session.execute(select(Agency))).scalars()}
        officials = {
            (o.agency_id, o.code): o.id for o in (await session.execute(select(Official))).scalars()
        }
        procedures = {p.code: p.id for p in (await session.execute(select(Procedure))).scalars()}
        for t in truths:
            agency_id = agencies[t.agency]
            zns = t.survey == "zns-5-star"
            response = Response(
                agency_id=agency_id,
                official_id=officials.get((agency_id, t.official)),
                procedure_id=procedures.get(t.procedure),
                survey_id=t.survey,
                survey_version=1,
                channel=t.channel,
                language=t.language,
                answered_on=t.day,
                rater_hash=secrets.token_hex(32),
                rater_key_id="test",
                complete=True,
                satisfaction=t.satisfaction,
                criteria=None if zns else {"1": 2, "3": 2, "7": 1},
                score_total=None if zns else 15.0,
                score_maximum=None if zns else 18.0,
                score_band=None if zns else "Xuất sắc",
                score_scheme="decision-766" if zns else "circular-01-2018",
            )
            session.add(response)
            await session.flush()
            if zns:
                session.add(response.record_answer("stars", str(t.satisfaction)))
                if t.comment is not None:
                    session.add(response.record_answer("note", None, text=t.comment))
            else:
                session.add(response.record_answer("c3", "mot_lan", 2))
                mood = "hai_long" if t.satisfaction >= 4 else "khong_hai_long"
                session.add(response.record_answer("overall", mood, 1))
                if t.comment is not None:
                    session.add(response.record_answer("comment", None, text=t.comment))
        await session.commit()


async def seed_month(runtime: Runtime, seed: int = 10) -> list[Truth]:
    """Two agencies' October 2026: the first as above (140 ratings, 3 with no official), the
    second with 8 ratings of two officials."""
    rng = random.Random(seed)
    await add_units(runtime, "ubnd-test", list(LOADS), list(PROCEDURES))
    await add_units(runtime, "ubnd-khac", ["CB21", "CB22"], [])
    truths: list[Truth] = []
    loads = [("ubnd-test", code, n) for code, n in LOADS.items()]
    loads += [("ubnd-test", "", 3), ("ubnd-khac", "CB21", 4), ("ubnd-khac", "CB22", 4)]
    for agency, official, count in loads:
        for _ in range(count):
            channel = _pick(rng, CHANNELS)
            truths.append(
                Truth(
                    agency=agency,
                    official=official,
                    procedure=_pick(rng, PROCEDURES),
                    channel=channel,
                    language="en" if rng.random() < 0.06 else "vi",
                    day=rng.choice(MONTH),
                    survey="zns-5-star" if channel == "zns" else "mot-cua",
                    satisfaction=rng.choice((5, 5, 4, 4, 2)),
                    comment=rng.choice(COMMENTS) if rng.random() < 0.35 else None,
                )
            )
    await store(runtime, truths)
    return truths
