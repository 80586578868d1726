"""Rules as data: a response keeps its scorer's inputs (never the dossier's dates) and is
re-scored when the bands change; an admin sets the agency-level criteria of a quarter from the command line."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from sqlalchemy import select

from bot.cli import main
from bot.flows.scoring import CIRCULAR_01_2018, dossier_inputs, five_bands
from bot.responses import apply_score, rescore_all
from bot.runtime import Runtime
from settings import load_settings
from storage import export, unit_criteria, units
from storage.models import Agency, Response, ResponseTally
from storage.stats import Thresholds
from tests.conftest import today
from tests.helpers import answer_with_first_buttons

DOSSIER = "000.00.12.H29-261120-0042"


async def _complete_one(client: TestClient[Any, Any], runtime: Runtime, api_key: str) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    registration = await client.post(
        "/api/v1/dossiers",
        headers=headers,
        json={
            "dossier_code": DOSSIER,
            "procedure_code": "1.001234",
            "official_code": "CB01",
            "received_at": (today() - dt.timedelta(days=6)).isoformat(),
            "due_at": (today() + dt.timedelta(days=1)).isoformat(),
        },
    )
    assert registration.status == 201, await registration.text()
    token = (await registration.json())["rating_token"]
    opened = await client.post("/simulator/api/session", json={"token": token, "lang": "vi"})
    session = (await opened.json())["session"]
    result = await client.post(
        "/api/v1/results",
        headers=headers,
        json={"results": [{"dossier_code": DOSSIER, "returned_at": today().isoformat()}]},
    )
    assert (await result.json())["accepted"] == 1
    await answer_with_first_buttons(client, runtime, session, texts={"comment": "Tốt"})


async def _class_tally(runtime: Runtime) -> dict[str, int]:
    async with runtime.sessions() as session:
        rows = await session.execute(
            select(ResponseTally.unit, ResponseTally.responses).where(
                ResponseTally.dimension == "class", ResponseTally.responses > 0
            )
        )
        return {unit: n for unit, n in rows}


async def test_a_closed_survey_keeps_its_inputs_and_is_rescored_under_new_bands(
    client: TestClient[Any, Any], runtime: Runtime, api_key: str
) -> None:
    await _complete_one(client, runtime, api_key)
    async with runtime.sessions() as session:
        [response] = (await session.execute(select(Response))).scalars().all()
    assert (response.score_total, response.score_maximum) == (18.0, 18.0)
    assert response.score_band == "Xuất sắc" and response.score_scheme == "circular-01-2018"
    # The inputs: the on-time classes of criteria 1-2, answer points; no date of the dossier.
    inputs = response.score_inputs or {}
    assert inputs["timeliness"] == {"1": "early", "2": "early"}
    assert inputs["answered"] == {"3": 2, "4": 2, "6": 2, "7": 2}
    kept = json.dumps(inputs)
    assert str(today().year) not in kept and DOSSIER not in kept
    assert await _class_tally(runtime) == {"Xuất sắc": 1}
    # Kept in the confidential store only: not even the unprotected one-table dump carries them.
    header, rows = await export.response_rows(runtime.sessions)
    assert not {"score_inputs", "score_scheme"} & set(header)
    assert not any(word in str(rows) for word in ("early", "on_time", "timeliness"))

    stricter = five_bands(19.0, 18.5, 17.0, 10.0)  # 18 of 18 is now "Khá"
    bands = {**Thresholds().bands, CIRCULAR_01_2018.id: stricter}
    done = await rescore_all(runtime.sessions, bands)
    assert (done.responses, done.changed) == (1, 1)
    async with runtime.sessions() as session:
        [again] = (await session.execute(select(Response))).scalars().all()
    assert (again.score_total, again.score_maximum, again.score_band) == (18.0, 18.0, "Khá")
    assert await _class_tally(runtime) == {"Khá": 1}  # the tally followed
    assert (await rescore_all(runtime.sessions, bands)).changed == 0


def test_agency_criteria_and_scores_recompute_from_the_command_line(
    cli_env: Path, monkeypatch: Any
) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["agency", "add", "ubnd-c", "UBND phường C"]).exit_code == 0
    none = runner.invoke(main, ["agency", "criteria", "ubnd-c"])
    assert none.exit_code != 0 and "--c5" in none.output
    bad = runner.invoke(main, ["agency", "criteria", "ubnd-c", "--c5", "3"])
    assert bad.exit_code != 0 and "0<=x<=2" in bad.output
    missing = runner.invoke(main, ["agency", "criteria", "nobody", "--c5", "2"])
    assert missing.exit_code != 0 and "no agency 'nobody'" in missing.output
    set_ = runner.invoke(main, ["agency", "criteria", "ubnd-c", "--c5", "2", "--c8", "1"])
    assert set_.exit_code == 0 and "5=2, 8=1" in set_.output, set_.output
    more = runner.invoke(main, ["agency", "criteria", "ubnd-c", "--c9", "0"])
    assert more.exit_code == 0 and "5=2, 8=1, 9=0" in more.output, more.output
    # Another quarter has values of its own; the current one (the default) keeps its own.
    other = runner.invoke(
        main, ["agency", "criteria", "ubnd-c", "--c5", "0", "--quarter", "2026-Q1"]
    )
    assert other.exit_code == 0 and "criteria for 2026-Q1: 5=0" in other.output, other.output
    bad_quarter = runner.invoke(
        main, ["agency", "criteria", "ubnd-c", "--c5", "0", "--quarter", "Q1"]
    )
    assert bad_quarter.exit_code != 0 and "2026-Q3" in bad_quarter.output

    async def store_one() -> dict[str, Any] | None:
        runtime = await Runtime.create(load_settings())
        try:
            unit = (await units.load_tree(runtime.sessions)).by_code("ubnd-c")
            assert unit is not None
            criteria = (await unit_criteria.read(runtime.sessions, unit.id, today())).in_force
            async with runtime.sessions() as session:
                agency = (
                    await session.execute(select(Agency).where(Agency.code == "ubnd-c"))
                ).scalar_one()
                response = Response(
                    agency_id=agency.id, survey_id="mot-cua", survey_version=1,
                    channel="web", language="vi", answered_on=today(), rater_hash="h",
                    rater_key_id="k", complete=True, score_scheme=CIRCULAR_01_2018.id,
                )  # fmt: skip
                day = today()
                response.score_inputs = dossier_inputs(
                    {"3": 2, "4": 2, "6": 2, "7": 2}, day, day, None, criteria
                ).to_json()
                apply_score(response, Thresholds().bands)
                session.add(response)
                await session.commit()
            return criteria
        finally:
            await runtime.close()

    assert asyncio.run(store_one()) == {"5": 2, "8": 1, "9": 0}

    async def bands() -> list[tuple[float | None, str | None]]:
        runtime = await Runtime.create(load_settings())
        try:
            async with runtime.sessions() as session:
                rows = await session.execute(select(Response.score_total, Response.score_band))
                return [tuple(r) for r in rows]  # type: ignore[misc]
        finally:
            await runtime.close()

    # 1+1 (on the due day) + 8 answered + 2+1+0 agency-level = 13 of 18: "Tốt" by default.
    assert asyncio.run(bands()) == [(13.0, "Tốt")]
    monkeypatch.setenv("SURVEYBOT_BAND_MOT_CUA_TOT", "13.5")
    recomputed = runner.invoke(main, ["scores", "recompute"])
    assert recomputed.exit_code == 0 and "re-scored 1 responses, 1 changed" in recomputed.output
    assert asyncio.run(bands()) == [(13.0, "Khá")]
