"""Anonymised row-level exports of the confidential store.

Each export draws a fresh random key and re-keys response ids with it, so two exports cannot be
joined row by row; the rater pseudonym never leaves the database. Dates are coarsened to the
export's period, rows are shuffled, and a cell that a spreadsheet would run as a formula is
neutralised.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import os
import random
from collections.abc import Iterable
from typing import IO, Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import aliased

from storage.db import Sessions
from storage.models import Agency, Answer, Official, Procedure, Response

Period = Literal["day", "week", "month", "quarter", "year"]
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
BASE_COLUMNS = [
    "response", "agency", "procedure", "official", "survey", "survey_version", "period",
    "channel", "language", "complete", "satisfaction", "score18", "classification",
]  # fmt: skip


def period_label(day: dt.date, period: Period) -> str:
    if period == "day":
        return day.isoformat()
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{day.year}-{day.month:02d}"
    if period == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return str(day.year)


def neutralise(value: Any) -> Any:
    """Prefix a quote to text that Excel would evaluate (formula injection)."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


async def response_rows(
    sessions: Sessions, period: Period = "month"
) -> tuple[list[str], list[list[Any]]]:
    """Header and shuffled rows, one per response, one column per question answered."""
    export_key = os.urandom(32)
    official = aliased(Official)
    procedure = aliased(Procedure)
    async with sessions() as session:
        responses = (
            await session.execute(
                select(Response, Agency.code, procedure.code, official.code)
                .join(Agency, Agency.id == Response.agency_id)
                .outerjoin(procedure, procedure.id == Response.procedure_id)
                .outerjoin(official, official.id == Response.official_id)
            )
        ).all()
        answers: dict[str, dict[str, Any]] = {}
        for answer in (await session.execute(select(Answer))).scalars():
            value = answer.text if answer.text is not None else answer.value
            if isinstance(value, list):
                value = "|".join(value)
            answers.setdefault(answer.response_id, {})[answer.question_id] = value
    question_ids = sorted({q for per in answers.values() for q in per})
    header = BASE_COLUMNS + [f"q_{q}" for q in question_ids]
    rows: list[list[Any]] = []
    for response, agency_code, procedure_code, official_code in responses:
        pseudonym = hmac.new(export_key, response.id.encode(), hashlib.sha256).hexdigest()[:16]
        per = answers.get(response.id, {})
        row = [
            pseudonym, agency_code, procedure_code or "", official_code or "", response.survey_id,
            response.survey_version, period_label(response.answered_on, period), response.channel,
            response.language, int(response.complete), response.satisfaction or "",
            response.score18 if response.score18 is not None else "", response.classification or "",
        ]  # fmt: skip
        row += [per.get(q, "") for q in question_ids]
        rows.append([neutralise(v) for v in row])
    random.SystemRandom().shuffle(rows)
    return header, rows


def write_csv(out: IO[str], header: list[str], rows: Iterable[list[Any]]) -> None:
    """UTF-8 with BOM so Excel shows Vietnamese correctly."""
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)


async def export_csv(sessions: Sessions, period: Period = "month") -> str:
    header, rows = await response_rows(sessions, period)
    buffer = io.StringIO()
    write_csv(buffer, header, rows)
    return buffer.getvalue()
