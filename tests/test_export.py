"""Row-level exports: one ZIP of k-anonymous ratings, comments apart, and the report, played as
the agency that knows every dossier's official, procedure, day and channel would read them.

Aggregate exports are tested against the releases in tests/test_aggregates.py.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import uuid
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import delete, select

from bot.flows.scrub import scrub
from bot.runtime import Runtime
from storage import anonymise, export, export_pass, export_rows
from storage.anonymise import ALL, MARKERS, Rule
from storage.cells import clean
from storage.export import ChangedDuringExport, ExportError, ExportSpec
from storage.models import Agency, Official, Procedure, Response
from storage.stats import Period, Thresholds, period_label
from tests.exportseed import COMMENTS, Truth, add_units, seed_month, store

K = Thresholds()
QI = (
    "agency",
    "official",
    "procedure",
    "channel",
    "language",
    "period",
    "survey",
    "survey_version",
)
FORMULA_FIRST = set("=+-@＝＋－＠")


class Package:
    """A row-level export as its reader opens it."""

    def __init__(self, data: bytes, fmt: str) -> None:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            self.names = archive.namelist()
            self.raw = {name: archive.read(name) for name in self.names}
        self.report: dict[str, Any] = json.loads(self.raw["report.json"])
        self.ratings = _rows(self.raw[f"ratings.{fmt}"], fmt)
        self.comments = _rows(self.raw[f"comments.{fmt}"], fmt)


def _rows(data: bytes, fmt: str) -> list[dict[str, Any]]:
    if fmt == "csv":
        assert data.startswith("\ufeff".encode())
        return list(csv.DictReader(io.StringIO(data.decode("utf-8").lstrip("\ufeff"))))
    if fmt == "jsonl":
        return [json.loads(line) for line in data.decode("utf-8").splitlines()]
    sheet = load_workbook(io.BytesIO(data)).worksheets[0]
    table = [["" if c.value is None else c.value for c in row] for row in sheet.iter_rows()]
    return [dict(zip(table[0], row, strict=True)) for row in table[1:]]


async def _export(
    runtime: Runtime, fmt: str = "csv", anonymise: bool = True, **spec: Any
) -> Package:
    out = io.BytesIO()
    await export.write_export(
        runtime.sessions, ExportSpec(fmt=fmt, **spec), K, out, anonymise=anonymise
    )
    return Package(out.getvalue(), fmt)


@pytest.fixture
async def month(runtime: Runtime, agency: Agency) -> list[Truth]:
    return await seed_month(runtime)


def _combinations(rows: Iterable[dict[str, Any]]) -> Counter[tuple[str, ...]]:
    return Counter(tuple(str(row[c]) for c in QI) for row in rows)


def _candidates(
    row: dict[str, Any], truths: list[Truth], named: dict[str, set[str]]
) -> list[Truth]:
    """The dossiers a row may be, to an agency that knows each dossier's official, procedure,
    day, channel and language, and the rule: an "(other ...)" value is one never named."""
    found = []
    for t in truths:
        if (t.agency, t.survey) != (row["agency"], row["survey"]):
            continue
        ok = True
        for column, value in (
            ("official", t.official),
            ("procedure", t.procedure),
            ("channel", t.channel),
            ("language", t.language),
        ):
            shown = str(row[column])
            if shown == ALL:
                continue
            if shown in MARKERS:
                ok = ok and value not in named[f"{t.agency}/{column}"]
            else:
                ok = ok and shown == value
        period = str(row["period"])
        if period != ALL:
            ok = ok and period_label(t.day, _level(period)) == period
        if ok:
            found.append(t)
    return found


def _level(period: str) -> Period:
    if "Q" in period:
        return "quarter"
    return {4: "year", 7: "month"}.get(len(period), "day")  # type: ignore[return-value]


def _named(rows: list[dict[str, Any]]) -> dict[str, set[str]]:
    named: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        for column in ("official", "procedure", "channel", "language"):
            if str(row[column]) not in MARKERS:
                named[f"{row['agency']}/{column}"].add(str(row[column]))
    return named


def _pinned(rows: list[dict[str, Any]], truths: list[Truth]) -> tuple[int, int, int]:
    """Rows whose candidates are one dossier (and how many of those reveal the right
    satisfaction), and the smallest number of candidates any row has."""
    named = _named(rows)
    pinned = right = 0
    smallest = len(truths)
    for row in rows:
        found = _candidates(row, truths, named)
        smallest = min(smallest, len(found))
        if len(found) == 1:
            pinned += 1
            right += int(row["satisfaction"]) == found[0].satisfaction
    return pinned, right, smallest


# ------------------------------------------------------------------------------ k-anonymity
async def test_every_combination_in_ratings_holds_k_rows(
    runtime: Runtime, month: list[Truth]
) -> None:
    """No combination of quasi-identifiers is below k, and the one-official ones reach 10."""
    package = await _export(runtime, period="day")
    assert package.names == ["ratings.csv", "comments.csv", "report.json"]
    rows = package.ratings
    assert 0 < len(rows) <= len(month)
    assert {r["period"] for r in rows} <= {"2026-10", ALL}  # never a day
    named = _named(rows)
    for combination, count in _combinations(rows).items():
        assert count >= K.k_group, combination
        members = [r for r in rows if tuple(str(r[c]) for c in QI) == combination]
        officials = {t.official for t in _candidates(members[0], month, named)}
        if combination[1] not in MARKERS or len(officials) == 1:
            assert count >= K.k_official, combination
    named_officials = {r["official"] for r in rows} - MARKERS
    # Officials with at least 10 ratings keep their name; CB07 (9) and below do not.
    assert {"CB01", "CB02", "CB03"} <= named_officials
    assert not named_officials & {"CB07", "CB08", "CB11", "CB12", "CB13", "CB14"}


async def test_a_uniqueness_attack_pins_rows_only_with_the_protection_off(
    runtime: Runtime, month: list[Truth]
) -> None:
    """The agency matches rows to dossiers on official, procedure, day, channel and language."""
    exposed = await _export(runtime, period="day", anonymise=False)
    assert len(exposed.ratings) == len(month)
    pinned, right, smallest = _pinned(exposed.ratings, month)
    assert smallest == 1 and pinned > 40 and right == pinned  # most rows are one citizen
    protected = await _export(runtime, period="day")
    pinned, _, smallest = _pinned(protected.ratings, month)
    assert pinned == 0 and smallest >= K.k_group


async def test_the_report_counts_what_was_generalised_suppressed_and_dropped(
    runtime: Runtime, month: list[Truth]
) -> None:
    package = await _export(runtime, fmt="jsonl")
    report, rows = package.report, package.ratings
    ratings = report["ratings"]
    assert report["anonymised"] is True and report["k"]["k_official"] == 10
    assert report["k"]["k_group"] == 5 and report["k"]["comments"] == 10
    assert any("k_official" in line for line in report["rule"])
    assert ratings["rows"] == len(rows) and ratings["rows_read"] == len(month)
    assert ratings["rows_dropped"] == len(month) - len(rows)
    blanked = [r for r in rows if r["period"] == ALL]
    assert ratings["rows_suppressed"] == len(blanked)
    assert all(r[c] == ALL for r in blanked for c in ("official", "procedure", "channel"))
    kept = [r for r in rows if r["period"] != ALL]
    for column in ("official", "procedure", "channel", "language"):
        assert ratings["generalised"][column]["rows"] == sum(r[column] in MARKERS for r in kept)
    assert ratings["generalised"]["official"]["rows"] > 0
    assert ratings["period_start"] == "month" and ratings["period_coarsest"] in ("month", "quarter")
    assert {r["period"] for r in kept} <= {"2026-10", "2026-Q4"}
    assert ratings["combinations"] == len(_combinations(rows))
    assert ratings["smallest_combination"] == min(_combinations(rows).values())
    by_agency = {a["agency"]: a for a in ratings["agencies"]}
    assert by_agency["ubnd-test"]["rows"] == 143 and by_agency["ubnd-khac"]["rows"] == 8
    assert sum(a["released"] for a in by_agency.values()) == len(rows)


async def test_ratings_carry_no_free_text_and_comments_only_agency_quarter_text(
    runtime: Runtime, month: list[Truth]
) -> None:
    package = await _export(runtime)
    header = list(package.ratings[0])
    assert not {"q_comment", "q_note", "q_c7_detail", "score_total", "score_band"} & set(header)
    assert {"q_c3", "q_overall", "q_stars"} <= set(header)
    stored = " ".join(str(v) for row in package.ratings for v in row.values())
    assert "nhiệt tình" not in stored and "HYPERLINK" not in stored
    assert package.report["ratings"]["columns_withheld"] == [
        "score_total",
        "score_maximum",
        "score_band",
        "q_comment",
        "q_note",
    ]
    comments = package.comments
    assert all(list(c) == ["agency", "quarter", "text"] for c in comments)
    # ubnd-khac's 8 responses are below k: its comments stay home.
    expected = [t for t in month if t.comment is not None and t.agency == "ubnd-test"]
    withheld = [t for t in month if t.comment is not None and t.agency == "ubnd-khac"]
    assert len(comments) == len(expected) and withheld
    assert package.report["comments"] == {
        "file": "comments.csv",
        "rows": len(expected),
        "withheld": len(withheld),
        "columns": ["agency", "quarter", "text"],
        "group": "agency x quarter",
    }
    assert {(c["agency"], c["quarter"]) for c in comments} == {("ubnd-test", "2026-Q4")}
    assert Counter(c["text"] for c in comments) == Counter(
        clean(scrub(t.comment or "").strip()) for t in expected
    )


async def test_two_exports_cannot_be_joined(runtime: Runtime, month: list[Truth]) -> None:
    first, second = await _export(runtime), await _export(runtime)
    async with runtime.sessions() as session:
        responses = (await session.execute(select(Response))).scalars().all()
    raw = {r.id for r in responses} | {r.rater_hash for r in responses}
    for package in (first, second):
        assert not raw & {v for row in package.ratings for v in row.values()}
        assert "response" not in package.comments[0]
    # Re-keyed pseudonyms: nothing in common; fresh orders: rows and comments line up nowhere.
    assert not {r["response"] for r in first.ratings} & {r["response"] for r in second.ratings}

    def content(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [tuple(v for k, v in row.items() if k != "response") for row in rows]

    assert sorted(content(first.ratings)) == sorted(content(second.ratings))
    assert content(first.ratings) != content(second.ratings)
    assert content(first.comments) != content(second.comments)


def test_the_plan_never_releases_a_combination_below_its_k() -> None:
    """Random desks, from tiny to busy: every released combination, counted on the true
    responses behind it, reaches k_official when they all rate one official, else k_group."""
    rule = Rule()
    for seed in range(60):
        rng = random.Random(seed)
        cells: dict[anonymise.Key, int] = Counter()
        agencies = [f"a{i}" for i in range(rng.randint(1, 3))]
        for _ in range(rng.randint(1, 400)):
            key = (
                rng.choice(agencies),
                rng.choice(("mot-cua", "mot-cua", "zns-5-star")),
                1,
                rng.choice([f"o{i}" for i in range(rng.randint(1, 12))] + [None]),
                rng.choice(["p1", "p1", "p2", "p3", None]),
                rng.choice(("telegram", "telegram", "zalo_oa", "web")),
                rng.choice(("vi",) * 9 + ("en",)),
                rng.choice(("2026-01", "2026-02", "2026-04", "2026-12")),
            )
            cells[key] += rng.randint(1, 6)
        plan = anonymise.plan(cells.items(), rule, rng.choice(("day", "month", "quarter")))
        released: dict[Any, list[tuple[anonymise.Key, int]]] = defaultdict(list)
        for key, out in zip(plan.keys, plan.released, strict=True):
            if out is not None:
                released[out].append((key, cells[key]))
        for out, members in released.items():
            officials = {key[3] for key, _ in members}
            one = len(officials) == 1 and None not in officials
            assert sum(n for _, n in members) >= rule.k(one), (seed, out, members)
            assert "-" not in out[7] or len(out[7]) == 7 or "Q" in out[7]  # never a day
        summary = plan.summary([cells[key] for key in plan.keys])
        assert summary.rows_read == sum(cells.values())
        assert summary.released + summary.dropped == summary.rows_read


async def test_an_erasure_while_the_export_runs_stops_it_before_anything_is_written(
    runtime: Runtime, agency: Agency, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two officials with exactly 10 ratings each: one erased between the plan's count and the
    rows would leave a combination of 9, so the export fails and writes nothing."""
    await add_units(runtime, "ubnd-test", ["CB31", "CB32"], ["1.000001"])
    day = dt.date(2026, 10, 5)
    await store(
        runtime,
        [
            Truth("ubnd-test", code, "1.000001", "telegram", "vi", day, "mot-cua", 5, None)
            for code in ("CB31", "CB32")
            for _ in range(10)
        ],
    )
    whole = await _export(runtime)
    assert Counter(r["official"] for r in whole.ratings) == {"CB31": 10, "CB32": 10}
    real = export_rows.reference

    async def reference_then_erase(sessions: Any, agency_id: str | None, until: Any) -> Any:
        found = await real(sessions, agency_id, until)
        async with runtime.sessions() as session:
            official = (
                await session.execute(select(Official.id).where(Official.code == "CB31"))
            ).scalar_one()
            one = (
                await session.execute(
                    select(Response.id).where(Response.official_id == official).limit(1)
                )
            ).scalar_one()
            await session.execute(delete(Response).where(Response.id == one))
            await session.commit()
        return found

    monkeypatch.setattr(export_rows, "reference", reference_then_erase)
    out = io.BytesIO()
    with pytest.raises(ChangedDuringExport, match="run the export again"):
        await export.write_export(runtime.sessions, ExportSpec(), K, out)
    assert out.getvalue() == b""
    monkeypatch.undo()
    again = await _export(runtime)  # CB31's 9 alone would be too few: no official is named
    assert Counter(r["official"] for r in again.ratings) == {ALL: 19}


# ------------------------------------------------------------------------------ formulas
def test_formulas_are_neutralised_after_every_other_cleaning_step() -> None:
    assert clean("\x01=HYPERLINK(1)") == "'=HYPERLINK(1)"
    for text in ("=1", "+1", "-1", "@A", "＝1", "＋1", "－1", "＠A", "﹦1", " =1", "\u200b=1"):
        assert clean(text) == "'" + text, text
    for text in ("\t=1", "\r1", "\n=1", "\x00\x1f@x"):
        assert clean(text).startswith("'"), text
    for text in ("1.000001", "Cán bộ", "a=b", "[số] 5", "'=already", "", "50%"):
        assert clean(text) == text
    assert clean("\ud800a\ufffe\x7f") == "a" and clean(5) == 5 and clean(None) is None
    assert clean(clean("\x02+x")) == clean("\x02+x")


def _live(value: Any) -> bool:
    """A cell a spreadsheet would evaluate: its first visible character starts a formula."""
    if not isinstance(value, str):
        return False
    text = value.lstrip(" \t\r\n\u200b\ufeff")
    return bool(text) and (text[0] in FORMULA_FIRST or value[:1] in ("\t", "\r"))


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "jsonl"])
async def test_no_cell_of_any_format_is_a_formula(
    runtime: Runtime, agency: Agency, fmt: str
) -> None:
    """Codes, answers and comments that would run as formulas come out inert in every member."""
    await add_units(runtime, '=ubnd,"lạ"', ["-CB,1"], ["+1.000009"])
    await store(
        runtime,
        [
            Truth(
                '=ubnd,"lạ"',
                "-CB,1",
                "+1.000009",
                "@web",
                "vi",
                dt.date(2026, 10, 2),
                "mot-cua",
                5,
                text,
            )
            for text in [*COMMENTS, *COMMENTS]
        ],
    )
    package = await _export(runtime, fmt=fmt)
    assert len(package.ratings) == 22 and len(package.comments) == 22
    cells = [v for rows in (package.ratings, package.comments) for r in rows for v in r.values()]
    assert not [v for v in cells if _live(v)]
    assert {r["agency"] for r in package.ratings} == {'\'=ubnd,"lạ"'}
    assert {r["official"] for r in package.ratings} == {"'-CB,1"}
    assert '\'=HYPERLINK("http://x")' in {c["text"] for c in package.comments}
    if fmt == "xlsx":
        for name in ("ratings.xlsx", "comments.xlsx"):
            sheet = load_workbook(io.BytesIO(package.raw[name])).worksheets[0]
            assert not [c for row in sheet.iter_rows() for c in row if c.data_type == "f"]


async def test_aggregate_cells_are_neutralised_in_every_format() -> None:
    from storage import aggregates

    header = ["agency", "unit", "name"]
    rows = [["\x01=ubnd", "＋CB", "@name"], ["－x", " =y", "ok"]]
    for fmt in ("csv", "jsonl", "xlsx"):
        data = b"".join([c async for c in aggregates.stream_table(header, rows, fmt)])
        if fmt == "xlsx":
            sheet = load_workbook(io.BytesIO(data)).worksheets[0]
            assert not [c for row in sheet.iter_rows() for c in row if c.data_type == "f"]
        cells = [v for r in _rows(data, fmt) for v in r.values()]
        assert len(cells) == 6 and not [v for v in cells if _live(v)], fmt


# ------------------------------------------------------------------------------ formats and parts
async def test_every_format_carries_the_same_package(runtime: Runtime, month: list[Truth]) -> None:
    by_format = {fmt: await _export(runtime, fmt=fmt, period="quarter") for fmt in export.FORMATS}

    def content(package: Package) -> list[tuple[str, ...]]:
        return sorted(
            tuple(str(v) for k, v in row.items() if k != "response") for row in package.ratings
        )

    assert content(by_format["csv"]) == content(by_format["jsonl"]) == content(by_format["xlsx"])
    assert {r["period"] for r in by_format["csv"].ratings} <= {"2026-Q4", ALL}
    scoped = await _export(runtime, agency_id=(await _agency_id(runtime, "ubnd-test")))
    assert {r["agency"] for r in scoped.ratings} == {"ubnd-test"}
    assert scoped.report["scope"]["agency"] == "ubnd-test"


async def _agency_id(runtime: Runtime, code: str) -> str:
    async with runtime.sessions() as session:
        return (await session.execute(select(Agency.id).where(Agency.code == code))).scalar_one()


async def test_a_large_export_runs_in_parallel_parts_through_the_same_plan(
    runtime: Runtime, month: list[Truth], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above PARTS_FROM_ROWS the ratings CSV is written by worker processes, one per part: the
    rows, the report and the check must be those of the one-process export."""
    alone = await _export(runtime, period="day")
    monkeypatch.setattr(export_pass, "PARTS_FROM_ROWS", 1)
    monkeypatch.setattr(export_pass, "export_workers", lambda: 3)
    spec = ExportSpec(period="day")
    out = io.BytesIO()
    count = await export.write_export(runtime.sessions, spec, K, out)
    in_parts = Package(out.getvalue(), "csv")
    assert count == len(in_parts.ratings) == len(alone.ratings)
    assert in_parts.raw["ratings.csv"].count("\ufeff".encode()) == 1

    def without_pseudonym(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
        return sorted(tuple(v for k, v in row.items() if k != "response") for row in rows)

    assert without_pseudonym(in_parts.ratings) == without_pseudonym(alone.ratings)
    assert len({r["response"] for r in in_parts.ratings}) == count
    drop = ("created_on",)
    assert {k: v for k, v in in_parts.report.items() if k not in drop} == {
        k: v for k, v in alone.report.items() if k not in drop
    }
    streamed = b"".join([c async for c in export.stream_export(runtime.sessions, spec, K)])
    assert without_pseudonym(Package(streamed, "csv").ratings) == without_pseudonym(alone.ratings)


def test_parts_cover_every_id_once_and_are_drawn_afresh() -> None:
    ids = [uuid.uuid4().hex for _ in range(2000)] + ["short", ""]
    draws = [export_pass.draw_parts(count) for count in (2, 3, 4, 2)]
    for parts in draws:
        for rid in ids:
            digit = rid[parts[0].position - 1 : parts[0].position]
            holders = [p for p in parts if (digit not in p.digits) == p.rest]
            assert len(holders) == 1, (rid, parts)
        assert parts[0].position not in (13, 17)  # a uuid4's fixed digits would not split
    assert len({(p[0].position, p[0].digits) for p in draws}) > 1


def test_bad_export_requests_are_refused_and_the_row_level_is_a_zip() -> None:
    with pytest.raises(ExportError, match="unknown format 'pdf'"):
        ExportSpec(fmt="pdf")
    with pytest.raises(ExportError, match="unknown level"):
        ExportSpec(level="rater")
    spec = ExportSpec(fmt="xlsx", period="quarter")
    assert (spec.filename, spec.content_type) == (
        "surveybot-responses-quarter.zip",
        "application/zip",
    )
    agency = ExportSpec(level="agency", fmt="jsonl")
    assert agency.content_type.startswith("application/x-ndjson")


async def test_ratings_show_the_field_and_every_combination_with_it_still_holds_k(
    runtime: Runtime, month: list[Truth]
) -> None:
    """The field is a quasi-identifier too: it follows the released procedure (or what all the
    merged ones share, else "*"), so adding it to the combinations splits none below k."""
    field_of = {"1.000001": "tu-phap", "1.000002": "tu-phap", "1.000003": "tnmt",
                "1.000004": "tnmt", "1.000005": "y-te"}  # fmt: skip
    async with runtime.sessions() as session:
        for procedure in (await session.execute(select(Procedure))).scalars():
            procedure.field = field_of.get(procedure.code)
        await session.commit()
    package = await _export(runtime, period="day")
    rows = package.ratings
    assert {r["field"] for r in rows} - {ALL} <= set(field_of.values())
    assert {r["field"] for r in rows} & {"tu-phap", "tnmt"}
    for row in rows:
        if row["procedure"] not in MARKERS:
            assert row["field"] == field_of[row["procedure"]], row
    with_field = Counter(tuple(str(r[c]) for c in (*QI, "field")) for r in rows)
    assert min(with_field.values()) >= K.k_group
    assert len(with_field) == len(_combinations(rows))  # the field split no combination
    assert "field" in package.report["quasi_identifiers"]


def test_a_workers_csv_lines_are_what_csv_writer_writes_for_the_same_rows() -> None:
    """A worker joins each CSV line from pieces rendered once per cell and per answer set; the
    file must read back exactly as csv.writer would have written the rows (quotes, commas,
    line breaks, an empty lone answer)."""
    from storage.export_worker import RatingPass, RatingSource

    key = ("a1", "mot-cua", 1, "o1", "p1", "telegram", "vi", "2026-11")
    head = ("ubnd, 01", 'thủ "tục"', "tu-phap", "CB\n01", "mot-cua", 1, "2026-11", "telegram", "vi")
    stored: list[list[Any]] = [
        ["r1", *key[:7], "2026-11-03", 1, 5, json.dumps({"c3": "a,b", "c7": 'say "hi"'})],
        ["r2", *key[:7], "2026-11-04", 0, None, json.dumps({"c3": "line\r\nbreak"})],
        ["r3", *key[:7], "2026-11-05", 1, 2, None],
    ]
    for questions in (["c3", "c7"], ["c7"], []):

        def source(asked: list[str] = questions) -> RatingSource:
            return RatingSource(None, "month", asked, b"k" * 32, [key], [head])

        expected = io.StringIO()
        csv.writer(expected).writerows(RatingPass(source()).rows(stored))
        assert RatingPass(source()).csv_lines(stored) == expected.getvalue()
        assert len(list(csv.reader(io.StringIO(expected.getvalue())))) == 3
