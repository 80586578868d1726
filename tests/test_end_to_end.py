"""The spine, as an agency and a citizen live it: register, bind, report, answer, export."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from aiohttp.test_utils import TestClient

from bot.runtime import Runtime
from storage import export
from tests.conftest import today
from tests.helpers import answer_with_first_buttons


async def test_agency_triggers_and_citizen_completes_mot_cua(
    client: TestClient[Any, Any], runtime: Runtime, api_key: str
) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    received = today() - dt.timedelta(days=6)
    registration = await client.post(
        "/api/v1/dossiers",
        headers=headers,
        json={
            "dossier_code": "000.00.12.H29-261120-0001",
            "procedure_code": "1.001234",
            "official_code": "CB01",
            "received_at": received.isoformat(),
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
        json={
            "results": [
                {"dossier_code": "000.00.12.H29-261120-0001", "returned_at": today().isoformat()}
            ]
        },
    )
    body = await result.json()
    assert body["accepted"] == 1 and body["items"][0]["survey_status"] == "sent"

    seen = await answer_with_first_buttons(
        client, runtime, session, texts={"comment": "Cán bộ tốt, gọi 0912 345 678 nếu cần"}
    )
    texts = [m["text"] for m in seen]
    assert any("Kính chào" in t for t in texts)
    assert texts[-1].startswith("Cảm ơn Ông/Bà đã đánh giá")

    rows = list(
        csv.DictReader(io.StringIO((await export.export_csv(runtime.sessions)).lstrip("\ufeff")))
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["official"] == "CB01" and row["q_c3"] == "0" and row["q_overall"] == "rat_hai_long"
    assert row["score_band"] == "Xuất sắc" and float(row["score_total"]) == 18.0
    assert float(row["score_maximum"]) == 18.0
    assert "0912" not in row["q_comment"] and "[số]" in row["q_comment"]
