"""Export benchmark: 1,000,000 responses to a row-level CSV, against a plain SQL-to-CSV dump.

Generates responses (with their answers) straight into a SQLite file under ``var/bench/`` with
``executemany`` (not the ORM; the response tally's triggers run on every insert), then
measures, each in a fresh subprocess so peak memory belongs to that step alone (the export's
worker processes included, each counted at its peak):

* ``plain``: the same rows (responses joined to codes, with their answer cells) dumped with
  sqlite3 and ``csv.writer``: the floor any export is compared with;
* ``export``: the real row-level export (``storage.export.write_export``: the ZIP of a
  k-anonymous ratings CSV planned on one GROUP BY of the combination counts, the comments and
  the report; keyed-hash re-keying, a fresh random order in SQL, cell cleaning; at this size
  one worker process per core, each writing a random part through the same recoding);
* ``aggregates``: building the release of the file's last month (``storage.releases``: agency,
  official, procedure and field cells, distributions, criteria (also per field), coverage, cut
  by the disclosure rule and the officials × procedures, officials × fields and agencies ×
  fields audits), which is what the dashboard's figures cost, once a
  month; pages then read one stored document.

``--postgres``: the same rows in a PostgreSQL database (``PG_URL`` or ``$BENCH_POSTGRES_URL``),
loaded with COPY; the floor is then a plain ``COPY (…) TO STDOUT WITH CSV`` of the same rows,
and the export and aggregates run unchanged on that URL (printed, not recorded in the table).

Prints the figures, records them in docs/benchmarks.md, and ends with one JSON line.
Targets: export ≤ 15 s, ≤ 300 MB peak, ≤ 3× plain; aggregates ≤ 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from storage.fields import CODES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
QUESTIONS = ("c3", "c7", "overall")
#: The PostgreSQL database ``--postgres`` fills (kept for ``--reuse``).
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/surveybot_bench_export"
TARGETS = {"export_seconds": 15.0, "export_peak_mb": 300.0, "ratio": 3.0, "aggregates_seconds": 3.0}


RESPONSE_COLUMNS = (
    "id", "agency_id", "official_id", "procedure_id", "survey_id", "survey_version", "channel",
    "language", "answered_on", "rater_hash", "rater_key_id", "complete", "satisfaction",
    "criteria", "score_total", "score_band", "answers",
)  # fmt: skip
ANSWER_COLUMNS = ("id", "response_id", "question_id", "value", "points", "text")
BATCH_ROWS = 50_000
Reference = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]
Batch = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]


def fake_reference(sqlite: bool) -> Reference:
    """20 agencies of 10 officials each, 40 procedures (a province's district, roughly)."""
    now: Any = dt.datetime.now(dt.UTC)
    if sqlite:
        now = now.isoformat(sep=" ")
    agencies = [(uuid.uuid4().hex, f"ubnd-{i:02d}", f"UBND phường {i:02d}", now) for i in range(20)]
    officials = [
        (uuid.uuid4().hex, a[0], f"CB{j:02d}", f"Cán bộ {j:02d} {a[1]}")
        for a in agencies
        for j in range(10)
    ]
    # 40 procedures in 8 fields: a release also cuts fields, each a union of five procedures.
    procedures = [(uuid.uuid4().hex, f"1.{i:06d}", f"Thủ tục {i}", CODES[i % 8]) for i in range(40)]
    return agencies, officials, procedures


def fake_batches(reference: Reference, rows: int, seed: int, sqlite: bool) -> Iterator[Batch]:
    """Responses with their answers, ``BATCH_ROWS`` at a time, the same for both databases
    (dates as text and flags as integers for SQLite, as Python values for PostgreSQL)."""
    _, officials, procedures = reference
    rng = random.Random(seed)
    start = dt.date(2025, 1, 1)
    overall = ('"rat_hai_long"', '"hai_long"', '"khong_hai_long"')
    for first in range(0, rows, BATCH_ROWS):
        responses = []
        answers: list[tuple[str, str, str, str, int | None, str | None]] = []
        for _ in range(min(BATCH_ROWS, rows - first)):
            rid = uuid.uuid4().hex
            official = officials[rng.randrange(len(officials))]
            level = rng.choices((5, 4, 2), weights=(6, 3, 1))[0]
            c3, c7 = rng.choice((2, 2, 1, 0)), rng.choice((2, 2, 1, 0))
            total = round((2 + c3 + c7) * 18 / 6, 1)
            criteria = f'{{"1": 2, "3": {c3}, "7": {c7}}}'
            cls = "Xuất sắc" if total >= 15 else "Tốt" if total >= 12 else "Khá"
            day: Any = start + dt.timedelta(days=rng.randrange(365))
            mood = overall[(5 - level) // 2 if level < 5 else 0]
            cells = json.dumps({"c3": str(c3), "c7": str(c7), "overall": json.loads(mood)})
            responses.append(
                (rid, official[1], official[0], procedures[rng.randrange(40)][0], "mot-cua", 1,
                 "telegram", "vi", day.isoformat() if sqlite else day, uuid.uuid4().hex * 2,
                 "k1", 1 if sqlite else True, level, criteria, total, cls, cells)
            )  # fmt: skip
            answers.append((uuid.uuid4().hex, rid, "c3", f'"{c3}"', c3, None))
            answers.append((uuid.uuid4().hex, rid, "c7", f'"{c7}"', c7, None))
            answers.append((uuid.uuid4().hex, rid, "overall", mood, None, None))
        yield responses, answers


def generate(path: Path, rows: int, seed: int = 5) -> None:
    """A fresh SQLite database at the current schema, filled with ``rows`` responses."""
    from storage.migrate import upgrade

    if path.exists():
        path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    upgrade(f"sqlite+aiosqlite:///{path}")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    reference = fake_reference(sqlite=True)
    agencies, officials, procedures = reference
    conn.executemany("INSERT INTO agency (id, code, name, created_at) VALUES (?,?,?,?)", agencies)
    conn.executemany("INSERT INTO official (id, agency_id, code, name) VALUES (?,?,?,?)", officials)
    conn.executemany("INSERT INTO procedure (id, code, name, field) VALUES (?,?,?,?)", procedures)
    marks = ",".join("?" * len(RESPONSE_COLUMNS))
    for responses, answers in fake_batches(reference, rows, seed, sqlite=True):
        conn.executemany(
            f"INSERT INTO response ({', '.join(RESPONSE_COLUMNS)}) VALUES ({marks})", responses
        )
        conn.executemany(
            f"INSERT INTO answer ({', '.join(ANSWER_COLUMNS)}) VALUES (?,?,?,?,?,?)", answers
        )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def generate_pg(url: str, rows: int, seed: int = 5) -> None:
    """The same rows in a fresh PostgreSQL database, loaded with COPY. The tally's per-row
    triggers are off while loading (20,000 rows took 25 s with them on this machine) and the
    tally is then recounted in one set-based pass (``storage.tally.backfill_statements``, what
    the migration that added it runs): the same counts the triggers would have kept."""
    import asyncpg

    from storage.migrate import upgrade
    from storage.tally import backfill_statements

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    name = dsn.rsplit("/", 1)[1]

    async def recreate() -> None:
        admin = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()

    async def load() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SET session_replication_role = replica")  # no triggers
            reference = fake_reference(sqlite=False)
            agencies, officials, procedures = reference
            await conn.copy_records_to_table(
                "agency", records=agencies, columns=["id", "code", "name", "created_at"]
            )
            await conn.copy_records_to_table(
                "official", records=officials, columns=["id", "agency_id", "code", "name"]
            )
            await conn.copy_records_to_table(
                "procedure", records=procedures, columns=["id", "code", "name", "field"]
            )
            for responses, answers in fake_batches(reference, rows, seed, sqlite=False):
                await conn.copy_records_to_table(
                    "response", records=responses, columns=list(RESPONSE_COLUMNS)
                )
                await conn.copy_records_to_table(
                    "answer", records=answers, columns=list(ANSWER_COLUMNS)
                )
            await conn.execute("SET session_replication_role = DEFAULT")
            async with conn.transaction():
                for statement in backfill_statements("postgresql"):
                    await conn.execute(statement)
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    asyncio.run(recreate())
    upgrade(url)
    asyncio.run(load())


# ------------------------------------------------------------------------------ measured steps
def _write_csv(cursor: sqlite3.Cursor, out: Path) -> int:
    """Every row of the cursor through csv.writer, in batches; returns the count."""
    count = 0
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        while rows := cursor.fetchmany(5000):
            writer.writerows(rows)
            count += len(rows)
    return count


def _url(db: str) -> str:
    """The SQLAlchemy URL of a step's database: a PostgreSQL URL as given, else a file."""
    return db if db.startswith("postgresql") else f"sqlite+aiosqlite:///{db}"


def step_plain(db: str, out: Path) -> int:
    """The floor: the same rows (codes joined, answer cells picked out of the response's
    answers) written by sqlite3 and csv.writer, in storage order, with nothing anonymised;
    on PostgreSQL, a plain ``COPY (…) TO STDOUT`` of the same rows as CSV."""
    if db.startswith("postgresql"):
        return _plain_copy(db, out)
    conn = sqlite3.connect(db)
    cells = ", ".join(f"json_extract(r.answers, '$.{q}')" for q in QUESTIONS)
    cursor = conn.execute(
        "SELECT r.id, g.code, p.code, o.code, r.survey_id, r.survey_version, r.answered_on, "
        "r.channel, r.language, r.complete, r.satisfaction, r.score_total, r.score_band, "
        f"{cells} FROM response r LEFT JOIN agency g ON g.id = r.agency_id "
        "LEFT JOIN procedure p ON p.id = r.procedure_id LEFT JOIN official o ON o.id = r.official_id"
    )
    try:
        return _write_csv(cursor, out)
    finally:
        conn.close()


def _plain_copy(url: str, out: Path) -> int:
    import asyncpg

    cells = ", ".join(f"r.answers::json ->> '{q}'" for q in QUESTIONS)
    query = (
        "SELECT r.id, g.code, p.code, o.code, r.survey_id, r.survey_version, r.answered_on, "
        "r.channel, r.language, r.complete, r.satisfaction, r.score_total, r.score_band, "
        f"{cells} FROM response r LEFT JOIN agency g ON g.id = r.agency_id "
        "LEFT JOIN procedure p ON p.id = r.procedure_id LEFT JOIN official o ON o.id = r.official_id"
    )

    async def run() -> int:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            status = await conn.copy_from_query(query, output=str(out), format="csv")
            return int(status.split()[-1])  # "COPY <rows>"
        finally:
            await conn.close()

    return asyncio.run(run())


def step_export(db: str, out: Path) -> int:
    """The row-level ZIP; counts the responses it read (every one passes through the plan,
    whether its row is released, blanked or dropped), like the plain dump counts its rows."""
    from sqlalchemy.ext.asyncio import AsyncEngine

    from storage import export
    from storage.db import make_engine, make_sessions
    from storage.stats import Thresholds

    async def run() -> int:
        engine: AsyncEngine = make_engine(_url(db))
        try:
            with out.open("wb") as handle:
                package = await export.write_package(
                    make_sessions(engine), export.ExportSpec(), Thresholds(), handle
                )
            return int(package.report["ratings"]["rows_read"])
        finally:
            await engine.dispose()

    return asyncio.run(run())


def step_aggregates(db: str, out: Path) -> int:
    """Build the release of the file's last month without storing it: what the figures cost
    now, once a month (pages then read one stored document)."""
    from sqlalchemy import func, select

    from storage import releases
    from storage.db import make_engine, make_sessions
    from storage.disclosure import Rule
    from storage.models import Response

    async def run() -> int:
        engine = make_engine(_url(db), read_only=True)
        sessions = make_sessions(engine)
        try:
            async with sessions() as session:
                last = await session.scalar(select(func.max(Response.answered_on)))
                if last is None:
                    return 0
                documents = await releases.build(session, releases.period_of("month", last), Rule())
                return sum(len(d.get("officials", [])) for d in documents.values())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def step_machine(db: str, out: Path) -> int:
    """A fixed workload of the same kind (SQLite sorting 500,000 random rows into Python, then
    csv.writer): its time says how fast this shared machine was during this run, so runs on
    different days can be told apart from changes in the code."""
    rng = random.Random(1)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a TEXT, b INTEGER, c REAL)")
    conn.executemany(
        "INSERT INTO t VALUES (?, ?, ?)",
        ((f"{rng.getrandbits(128):032x}", i, i / 7) for i in range(500_000)),
    )
    cursor = conn.execute("SELECT a, b, c, a || b FROM t ORDER BY random()")
    try:
        return _write_csv(cursor, out)
    finally:
        conn.close()


STEPS = {
    "machine": step_machine,
    "plain": step_plain,
    "export": step_export,
    "aggregates": step_aggregates,
}


def measure(step: str, db: str, out: Path) -> dict[str, Any]:
    """Run one step in a fresh interpreter; time it there and read its peak RSS."""
    result = subprocess.run(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "bench.export", "--step", step, "--db", str(db), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the address space, so unlike ru_maxrss it does
    not inherit the high-water mark of the parent that forked us."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_step(step: str, db: str, out: Path) -> None:
    started = time.perf_counter()
    rows = STEPS[step](db, out)
    seconds = time.perf_counter() - started
    peak_mb = _peak_rss_mb()
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if worker_mb:  # the export's worker processes run at once: count each at its peak
        from storage.export import export_workers

        peak_mb += worker_mb * export_workers()
    print(
        json.dumps(
            {"step": step, "rows": rows, "seconds": round(seconds, 2), "peak_mb": round(peak_mb, 1)}
        )
    )


def record(figures: dict[str, Any]) -> None:
    """Keep one line per row count in docs/benchmarks.md (the newest run replaces the old)."""
    header = (
        "# Benchmarks\n\n## Export (`python -m bench export`)\n\n"
        "Row-level anonymised CSV export vs a plain SQL-to-CSV dump of the same rows, and the\n"
        "dashboard aggregates, on a SQLite file. Each step runs in its own process; peak memory is\n"
        "that process's maximum RSS (interpreter and libraries included). Targets for 1,000,000\n"
        "responses: export ≤ 15 s, ≤ 300 MB, ≤ 3× the plain dump; aggregates ≤ 3 s.\n\n"
        "| rows | date | cpus | machine ref s | plain s | export s | ratio | export peak MB | plain peak MB | aggregates s | pass |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    line = (
        f"| {figures['rows']:,} | {figures['date']} | {figures['cpus']} | {figures['machine_seconds']} | "
        f"{figures['plain_seconds']} | "
        f"{figures['export_seconds']} | {figures['ratio']} | {figures['export_peak_mb']} | "
        f"{figures['plain_peak_mb']} | {figures['aggregates_seconds']} | {'yes' if figures['pass'] else 'no'} |\n"
    )
    existing = DOCS.read_text("utf-8") if DOCS.exists() else ""
    marker = "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    if marker in existing:
        head, rest = existing.split(marker, 1)
        lines = rest.splitlines(keepends=True)
        size = next((i for i, r in enumerate(lines) if not r.startswith("|")), len(lines))
        tail = "".join(lines[size:])  # the table ends at its first line that is not a row
        rows_ = [r for r in lines[:size] if not r.startswith(f"| {figures['rows']:,} |")] + [line]
        DOCS.write_text(head + marker + "".join(rows_) + tail, "utf-8")
    else:
        DOCS.parent.mkdir(parents=True, exist_ok=True)
        DOCS.write_text(existing + ("\n" if existing else "") + header + line, "utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("command", nargs="?", choices=["export"], default="export")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", default=str(ROOT / "var" / "bench" / "bench.db"),
                        help="the SQLite file (ignored with --postgres)")  # fmt: skip
    parser.add_argument("--postgres", action="store_true",
                        help=f"on PostgreSQL ({PG_URL}, or $BENCH_POSTGRES_URL), against a "
                        "plain COPY … TO STDOUT; not recorded in the SQLite table")  # fmt: skip
    parser.add_argument("--reuse", action="store_true", help="keep an existing database")
    parser.add_argument("--no-record", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.step:
        _run_step(args.step, args.db, args.out)
        return
    db = Path(args.db)
    target = os.environ.get("BENCH_POSTGRES_URL", PG_URL) if args.postgres else str(db)
    if args.postgres and not args.reuse:
        started = time.perf_counter()
        generate_pg(target, args.rows)
        print(
            f"generated {args.rows:,} responses in {time.perf_counter() - started:.1f} s -> {target}"
        )
    elif args.postgres:
        from storage.migrate import upgrade

        upgrade(target)
    elif not (args.reuse and db.exists()):
        started = time.perf_counter()
        generate(db, args.rows)
        print(f"generated {args.rows:,} responses in {time.perf_counter() - started:.1f} s -> {db}")
    else:
        from storage.migrate import upgrade

        upgrade(f"sqlite+aiosqlite:///{db}")  # a database kept from an older schema
    out_dir = db.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = measure("machine", target, out_dir / "machine.csv")
    plain = measure("plain", target, out_dir / "plain.csv")
    exported = measure("export", target, out_dir / "export.zip")
    aggregates = measure("aggregates", target, out_dir / "aggregates.txt")
    ratio = round(exported["seconds"] / plain["seconds"], 2) if plain["seconds"] else 0.0
    figures = {
        "benchmark": "export",
        "database": "postgresql" if args.postgres else "sqlite",
        "rows": exported["rows"],
        "date": dt.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "machine_seconds": machine["seconds"],
        "plain_seconds": plain["seconds"],
        "plain_peak_mb": plain["peak_mb"],
        "export_seconds": exported["seconds"],
        "export_peak_mb": exported["peak_mb"],
        "ratio": ratio,
        "aggregates_seconds": aggregates["seconds"],
        "aggregates_peak_mb": aggregates["peak_mb"],
    }
    figures["pass"] = (
        exported["seconds"] <= TARGETS["export_seconds"]
        and exported["peak_mb"] <= TARGETS["export_peak_mb"]
        and ratio <= TARGETS["ratio"]
        and aggregates["seconds"] <= TARGETS["aggregates_seconds"]
    )
    print(f"machine ref: {machine['seconds']:.2f} s (fixed workload: how fast the machine was)")
    print(f"plain dump : {plain['seconds']:.2f} s, peak {plain['peak_mb']:.0f} MB")
    print(
        f"export     : {exported['seconds']:.2f} s, peak {exported['peak_mb']:.0f} MB, {ratio}x plain"
    )
    print(f"aggregates : {aggregates['seconds']:.2f} s, peak {aggregates['peak_mb']:.0f} MB")
    if not (args.no_record or args.postgres):
        record(figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
