"""The public results page and its open data over HTTP, on SQLite and PostgreSQL.

Seeds July to September 2026 for two units, releases the three months, and reads the page, the
CSV and the JSON as an outsider would: no login, Vietnamese first, a closed quarter summed from
the releases, a unit withheld in one month shown as such, bad periods answered 404 with the
periods there are, and a flood answered 429. The adversary test plays someone who compares the
public figures with the live rows: they must equal what the releases hold, and late answers,
erasures and a new month change nothing on the page.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import delete, func, select

from bot.app import create_app
from bot.cli import demo_history_start, seed_demo, seed_demo_logins
from bot.runtime import Runtime
from storage import releases
from storage.models import Agency, Response
from storage.pseudonym import KeyRing
from storage.public_results import closed_periods
from storage.releases import PROVINCE
from tests.adminseed import Batch, add_agency, seed
from tests.conftest import REDIS_URL, make_settings

JULY, AUGUST, SEPTEMBER = dt.date(2026, 7, 10), dt.date(2026, 8, 10), dt.date(2026, 9, 10)
AFTER_Q3 = dt.datetime(2026, 10, 20, tzinfo=dt.UTC)


async def _seed_quarter(runtime: Runtime) -> None:
    """ubnd-test: 20 + 16 + 18 ratings; ubnd-khac: 12 in July, 3 in August (withheld: fewer
    than k), 14 in September; ubnd-ba: 8 in each month (withheld in August as the smallest complement of
    ubnd-khac's 3) and 9."""
    await add_agency(runtime, "ubnd-khac", "UBND phường Khác", ["CB09"])
    await add_agency(runtime, "ubnd-ba", "UBND xã Ba", ["CB07", "CB08"])
    await seed(
        runtime,
        "ubnd-ba",
        [
            Batch(4, official, satisfaction=5, day=day)
            for official in ("CB07", "CB08")
            for day in (JULY, AUGUST, SEPTEMBER)
        ],
    )
    await seed(
        runtime,
        "ubnd-test",
        [
            Batch(17, "CB01", satisfaction=5, day=JULY),
            Batch(3, "CB01", satisfaction=1, day=JULY),
            Batch(14, "CB01", satisfaction=4, day=AUGUST),
            Batch(2, "CB02", satisfaction=2, day=AUGUST),
            Batch(18, "CB01", satisfaction=5, day=SEPTEMBER),
        ],
    )
    await seed(
        runtime,
        "ubnd-khac",
        [
            Batch(10, "CB09", satisfaction=5, day=JULY),
            Batch(2, "CB09", satisfaction=1, day=JULY),
            Batch(3, "CB09", satisfaction=1, day=AUGUST),
            Batch(12, "CB09", satisfaction=4, day=SEPTEMBER),
            Batch(2, "CB09", satisfaction=2, day=SEPTEMBER),
        ],
    )
    assert await runtime.publish_releases(AFTER_Q3) == ["2026-07", "2026-08", "2026-09"]


async def _released_sums(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Per unit (and "all"): the sums of its figures in the quarter's province documents, and
    the months it was withheld in: what the releases hold, read straight from storage."""
    infos = [r for r in await releases.list_releases(runtime.sessions) if r.label < "2026-10"]
    docs = await releases.documents(runtime.sessions, [r.id for r in infos], [PROVINCE])
    label = {r.id: r.label for r in infos}
    sums: dict[str, dict[str, Any]] = {}
    for (rid, _), doc in docs.items():
        for unit in [{**doc["total"], "key": "all"}, *doc["agencies"]]:
            acc = sums.setdefault(unit["key"], {"rated": 0, "satisfied": 0, "withheld": []})
            if unit["suppressed"]:
                acc["withheld"].append(label[rid])
            else:
                acc["rated"] += unit["rated"]
                acc["satisfied"] += unit["satisfied"]
    return sums


async def test_a_closed_quarter_is_public_in_vietnamese_with_its_counts_and_intervals(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    assert (await client.get("/public")).status == 200  # nothing released: a polite empty page
    await _seed_quarter(runtime)

    page = await client.get("/public")
    html = await page.text()
    assert page.status == 200 and 'lang="vi"' in html
    assert "Kết quả 2026-Q3" in html and "Đo gì và đo như thế nào" in html
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert "<script" not in html and "http://" not in html and "https://" not in html
    sums = await _released_sums(runtime)
    assert sums["ubnd-khac"]["withheld"] == sums["ubnd-ba"]["withheld"] == ["2026-08"]
    test_row = html.split('data-unit="ubnd-test"')[1].split("</tr>")[0]
    assert 'data-status="published"' in test_row and ">54<" in test_row  # 20 + 16 + 18
    assert 'data-k="rank">1<' in test_row
    khac_row = html.split('data-unit="ubnd-khac"')[1].split("</tr>")[0]
    assert 'data-status="partial"' in khac_row and "2026-08" in khac_row
    assert ">26<" in khac_row  # July's 12 + September's 14: August's 3 are nowhere
    assert 'data-k="rank">–<' in khac_row  # a part-period is not ranked against whole ones
    # The August group of ubnd-test's CB02 (2 ratings) is not published by unit: no officials.
    assert "CB01" not in html and "Nguyễn" not in html

    english = await (await client.get("/public?lang=en&period=2026-Q3")).text()
    assert 'lang="en"' in english and "What is measured and how" in english
    assert "Results for 2026-Q3" in english

    as_json = await client.get("/public/data.json?period=2026-Q3")
    assert as_json.status == 200 and "attachment" in as_json.headers["Content-Disposition"]
    document = json.loads(await as_json.read())
    assert document["schema"] == "surveybot-public-results/1"
    assert [r["label"] for r in document["releases"]] == ["2026-07", "2026-08", "2026-09"]
    assert {r["published_at"] for r in document["releases"]} == {"2026-10-20T00:00:00+00:00"}
    by_code = {f["code"]: f for f in document["figures"]}
    assert by_code["all"]["level"] == "province"
    for code in ("all", "ubnd-test", "ubnd-khac", "ubnd-ba"):
        assert by_code[code]["rated"] == sums[code]["rated"], code
        assert by_code[code]["satisfied"] == sums[code]["satisfied"], code
        assert by_code[code]["withheld_in"] == sums[code]["withheld"], code
        low, high = by_code[code]["wilson_low_pct"], by_code[code]["wilson_high_pct"]
        assert low <= by_code[code]["rate_pct"] <= high, code
    assert by_code["ubnd-test"]["band"] == "Xuất sắc"  # 49 of 54 not dissatisfied: 90.7 %
    as_csv = await client.get("/public/data.csv?period=2026-Q3")
    rows = list(csv.DictReader(io.StringIO((await as_csv.read()).decode("utf-8-sig"))))
    assert {r["code"]: r["rated"] for r in rows} == {c: str(f["rated"]) for c, f in by_code.items()}
    assert next(r for r in rows if r["code"] == "ubnd-khac")["withheld_in"] == "2026-08"


async def test_bad_periods_and_odd_query_strings_get_a_404_naming_the_periods_never_a_500(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    await _seed_quarter(runtime)
    for query in ("period=2026-Q4", "period=2026-10", "period=%00", "period=" + "9" * 300,
                  "period=2026-Q3&period=x", "lang=%ff%fe", "period=\u0110"):  # fmt: skip
        page = await client.get(f"/public?{query}")
        assert page.status in (200, 404), query
        data = await client.get(f"/public/data.json?{query}")
        assert data.status in (200, 404), query
        if data.status == 404:
            body = await data.json()
            assert body["error"] == "unknown_period" and body["periods"] == ["2026-Q3"]
            assert "2026-Q3" in await page.text()
    # 2026 is not closed (October to December are not released): no year is offered yet.
    assert (await client.get("/public/data.csv?period=2026")).status == 404
    assert (await client.get("/public/data.xml")).status == 404


async def test_the_public_doors_are_rate_limited_per_client(
    tmp_path: Path, database_url: str, keyring: KeyRing, redis_prefix: str
) -> None:
    settings = make_settings(
        tmp_path, database_url, redis_url=REDIS_URL, redis_prefix=redis_prefix, public_burst=3
    )
    limited = await Runtime.create(settings, keyring=keyring)
    app = create_app(limited, background=False)
    async with TestClient(TestServer(app)) as client:
        answers = [await client.get("/public/data.json") for _ in range(4)]
        assert [a.status for a in answers[:3]] == [200, 200, 200]
        assert answers[3].status == 429 and int(answers[3].headers["Retry-After"]) >= 1
        assert (await answers[3].json())["error"] == "rate_limited"
        page = await client.get("/public")
        assert page.status == 429 and "text/html" in page.headers["Content-Type"]
    await limited.close()


async def test_the_public_figures_are_the_releases_never_the_live_rows(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    """The adversary compares the public page with what is stored live: the page must hold
    the releases' sums, and late answers, erasures and a new month must change no byte."""
    await _seed_quarter(runtime)
    before = await (await client.get("/public?period=2026-Q3")).read()
    data_before = await (await client.get("/public/data.json?period=2026-Q3")).read()

    # Late answers dated in the quarter, an erasure, and a rating of the open month.
    await seed(runtime, "ubnd-khac", [Batch(6, "CB09", satisfaction=1, day=AUGUST)])
    async with runtime.sessions() as session:
        gone = (
            await session.execute(
                select(Response.id)
                .where(Response.answered_on == SEPTEMBER, Response.agency_id == agency.id)
                .limit(4)
            )
        ).scalars()
        await session.execute(delete(Response).where(Response.id.in_(list(gone))))
        await session.commit()
    await seed(runtime, "ubnd-test", [Batch(1, "CB01", satisfaction=1, day=dt.date.today())])

    assert await (await client.get("/public?period=2026-Q3")).read() == before
    document = json.loads(await (await client.get("/public/data.json?period=2026-Q3")).read())
    assert json.dumps(document).encode() == json.dumps(json.loads(data_before)).encode()
    sums = await _released_sums(runtime)
    async with runtime.sessions() as session:
        live = dict(
            (
                await session.execute(
                    select(Agency.code, func.count(Response.satisfaction))
                    .join(Agency, Agency.id == Response.agency_id)
                    .where(Response.answered_on.between(JULY.replace(day=1), SEPTEMBER))
                    .group_by(Agency.code)
                )
            ).all()
        )
    by_code = {f["code"]: f for f in document["figures"]}
    for code in ("ubnd-test", "ubnd-khac"):
        assert by_code[code]["rated"] == sums[code]["rated"]
        assert by_code[code]["rated"] != live[code], code  # a live count would differ
    assert by_code["all"]["rated"] == sums["all"]["rated"] != sum(live.values())


def test_only_periods_every_day_of_which_is_released_are_public() -> None:
    def info(label: str, start: dt.date, end: dt.date) -> releases.ReleaseInfo:
        return releases.ReleaseInfo(label, label, "month", start, end, AFTER_Q3, {})

    months = [
        info(f"2026-{m:02d}", dt.date(2026, m, 1), releases.period_of("month", dt.date(2026, m, 1)).ends_on)
        for m in range(1, 13)
    ]  # fmt: skip
    labels = [p.label for p in closed_periods(months)]
    assert labels == ["2026-Q4", "2026", "2026-Q3", "2026-Q2", "2026-Q1"]
    assert [p.label for p in closed_periods(months[6:8])] == []  # July and August only
    week = info("2026-W40", dt.date(2026, 9, 28), dt.date(2026, 10, 4))  # straddles Q3 and Q4
    labels = [p.label for p in closed_periods([*months[6:8], week])]
    assert labels == []
    year = closed_periods(months)[1]
    assert year.kind == "year" and len(year.releases) == 12


async def test_per_official_figures_are_public_only_when_the_setting_says_so(
    client: TestClient[Any, Any],
    runtime: Runtime,
    agency: Agency,
    tmp_path: Path,
    database_url: str,
    keyring: KeyRing,
    redis_prefix: str,
) -> None:
    await _seed_quarter(runtime)
    off = json.loads(await (await client.get("/public/data.json")).read())
    assert {f["level"] for f in off["figures"]} == {"province", "unit"}
    assert "Nguyễn Văn A" not in await (await client.get("/public")).text()

    settings = make_settings(
        tmp_path,
        database_url,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        public_officials=True,
    )
    with_officials = await Runtime.create(settings, keyring=keyring)
    async with TestClient(TestServer(create_app(with_officials, background=False))) as other:
        document = json.loads(await (await other.get("/public/data.json")).read())
        html = await (await other.get("/public")).text()
    await with_officials.close()
    people = {(f["agency"], f["code"]): f for f in document["figures"] if f["level"] == "official"}
    # CB02's 2 August ratings are withheld, and CB01's August with them (the complement).
    a = people[("ubnd-test", "CB01")]
    assert (a["rated"], a["withheld_in"], a["status"]) == (38, ["2026-08"], "partial")
    assert people[("ubnd-test", "CB02")]["status"] == "withheld"
    assert people[("ubnd-test", "CB02")]["rated"] is None
    assert people[("ubnd-khac", "CB09")]["rated"] == 26
    assert 'data-official="ubnd-test:CB01"' in html and "Nguyễn Văn A" in html


async def test_the_demo_shows_its_last_closed_quarter_on_the_public_page(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await seed_demo(runtime)
    await seed_demo_logins(runtime)
    await runtime.publish_releases()
    start = demo_history_start(dt.date.today(), runtime.settings.effective_release_delay_hours)
    document = json.loads(await (await client.get("/public/data.json")).read())
    assert document["period"]["kind"] == "quarter"
    assert document["period"]["starts_on"] == start.isoformat()
    units = {f["code"]: f for f in document["figures"] if f["level"] == "unit"}
    # The demo's small province: every unit's figure is its subtree's, ranked within its kind.
    assert {"ubnd-demo", "ubnd-demo-2", "quan-1-demo", "tp-demo"} <= set(units)
    assert units["ubnd-demo"]["kind"] == "commune" and units["ubnd-demo"]["parent"] == "quan-1-demo"
    wards = [f for f in units.values() if f["kind"] == "commune" and f["rank"] is not None]
    assert sorted(f["rank"] for f in wards) == list(range(1, len(wards) + 1))
    assert any(f["rated"] for f in units.values())  # something is shown, not all withheld


async def test_open_data_cells_never_run_as_formulas(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    await add_agency(runtime, "ubnd-cong-thuc", '=HYPERLINK("http://x","bấm")', ["CX01", "CX02"])
    await seed(
        runtime,
        "ubnd-cong-thuc",
        [Batch(6, o, day=d) for o in ("CX01", "CX02") for d in (JULY, AUGUST, SEPTEMBER)],
    )
    assert await runtime.publish_releases(AFTER_Q3) == ["2026-07", "2026-08", "2026-09"]
    text = (await (await client.get("/public/data.csv")).read()).decode("utf-8-sig")
    names = {r["code"]: r["name"] for r in csv.DictReader(io.StringIO(text))}
    assert names["ubnd-cong-thuc"] == '\'=HYPERLINK("http://x","bấm")'
    html = await (await client.get("/public")).text()
    assert "=HYPERLINK(&#34;http://x&#34;" in html and '<a href="http://x' not in html
