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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
QUESTIONS = ("c3", "c7", "overall")
TARGETS = {"export_seconds": 15.0, "export_peak_mb": 300.0, "ratio": 3.0, "aggregates_seconds": 3.0}


def generate(path: Path, rows: int, seed: int = 5) -> None:
    """A fresh database at the current schema, filled with ``rows`` responses."""
    from storage.migrate import upgrade

    if path.exists():
        path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    upgrade(f"sqlite+aiosqlite:///{path}")
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    now = dt.datetime.now(dt.UTC).isoformat(sep=" ")
    agencies = [(uuid.uuid4().hex, f"ubnd-{i:02d}", f"UBND phường {i:02d}", now) for i in range(20)]
    conn.executemany("INSERT INTO agency (id, code, name, created_at) VALUES (?,?,?,?)", agencies)
    officials = [
        (uuid.uuid4().hex, a[0], f"CB{j:02d}", f"Cán bộ {j:02d} {a[1]}")
        for a in agencies
        for j in range(10)
    ]
    conn.executemany("INSERT INTO official (id, agency_id, code, name) VALUES (?,?,?,?)", officials)
    from storage.fields import CODES

    # 40 procedures in 8 fields: a release also cuts fields, each a union of five procedures.
    procedures = [(uuid.uuid4().hex, f"1.{i:06d}", f"Thủ tục {i}", CODES[i % 8]) for i in range(40)]
    conn.executemany("INSERT INTO procedure (id, code, name, field) VALUES (?,?,?,?)", procedures)
    start = dt.date(2025, 1, 1)
    batch = 50_000
    overall = ('"rat_hai_long"', '"hai_long"', '"khong_hai_long"')
    for first in range(0, rows, batch):
        responses = []
        answers: list[tuple[str, str, str, str, int | None, str | None]] = []
        for _ in range(min(batch, rows - first)):
            rid = uuid.uuid4().hex
            official = officials[rng.randrange(len(officials))]
            level = rng.choices((5, 4, 2), weights=(6, 3, 1))[0]
            c3, c7 = rng.choice((2, 2, 1, 0)), rng.choice((2, 2, 1, 0))
            total = round((2 + c3 + c7) * 18 / 6, 1)
            criteria = f'{{"1": 2, "3": {c3}, "7": {c7}}}'
            cls = "Xuất sắc" if total >= 15 else "Tốt" if total >= 12 else "Khá"
            day = (start + dt.timedelta(days=rng.randrange(365))).isoformat()
            mood = overall[(5 - level) // 2 if level < 5 else 0]
            cells = json.dumps({"c3": str(c3), "c7": str(c7), "overall": json.loads(mood)})
            responses.append(
                (rid, official[1], official[0], procedures[rng.randrange(40)][0], "mot-cua", 1,
                 "telegram", "vi", day, uuid.uuid4().hex * 2, "k1", 1, level, criteria, total, cls,
                 cells)
            )  # fmt: skip
            answers.append((uuid.uuid4().hex, rid, "c3", f'"{c3}"', c3, None))
            answers.append((uuid.uuid4().hex, rid, "c7", f'"{c7}"', c7, None))
            answers.append((uuid.uuid4().hex, rid, "overall", mood, None, None))
        conn.executemany(
            "INSERT INTO response (id, agency_id, official_id, procedure_id, survey_id, "
            "survey_version, channel, language, answered_on, rater_hash, rater_key_id, complete, "
            "satisfaction, criteria, score_total, score_band, answers) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            responses,
        )
        conn.executemany(
            "INSERT INTO answer (id, response_id, question_id, value, points, text) VALUES (?,?,?,?,?,?)",
            answers,
        )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


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


def step_plain(db: Path, out: Path) -> int:
    """The floor: the same rows (codes joined, answer cells picked out of the response's
    answers) written by sqlite3 and csv.writer, in storage order, with nothing anonymised."""
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


def step_export(db: Path, out: Path) -> int:
    """The row-level ZIP; counts the responses it read (every one passes through the plan,
    whether its row is released, blanked or dropped), like the plain dump counts its rows."""
    from sqlalchemy.ext.asyncio import AsyncEngine

    from storage import export
    from storage.db import make_engine, make_sessions
    from storage.stats import Thresholds

    async def run() -> int:
        engine: AsyncEngine = make_engine(f"sqlite+aiosqlite:///{db}")
        try:
            with out.open("wb") as handle:
                package = await export.write_package(
                    make_sessions(engine), export.ExportSpec(), Thresholds(), handle
                )
            return int(package.report["ratings"]["rows_read"])
        finally:
            await engine.dispose()

    return asyncio.run(run())


def step_aggregates(db: Path, out: Path) -> int:
    """Build the release of the file's last month without storing it: what the figures cost
    now, once a month (pages then read one stored document)."""
    from sqlalchemy import func, select

    from storage import releases
    from storage.db import make_engine, make_sessions
    from storage.disclosure import Rule
    from storage.models import Response

    async def run() -> int:
        engine = make_engine(f"sqlite+aiosqlite:///{db}", read_only=True)
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


def step_machine(db: Path, out: Path) -> int:
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


def measure(step: str, db: Path, out: Path) -> dict[str, Any]:
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


def _run_step(step: str, db: Path, out: Path) -> None:
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
    parser.add_argument("--db", type=Path, default=ROOT / "var" / "bench" / "bench.db")
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
    db: Path = args.db
    if not (args.reuse and db.exists()):
        started = time.perf_counter()
        generate(db, args.rows)
        print(f"generated {args.rows:,} responses in {time.perf_counter() - started:.1f} s -> {db}")
    else:
        from storage.migrate import upgrade

        upgrade(f"sqlite+aiosqlite:///{db}")  # a database kept from an older schema
    out_dir = db.parent
    machine = measure("machine", db, out_dir / "machine.csv")
    plain = measure("plain", db, out_dir / "plain.csv")
    exported = measure("export", db, out_dir / "export.zip")
    aggregates = measure("aggregates", db, out_dir / "aggregates.txt")
    ratio = round(exported["seconds"] / plain["seconds"], 2) if plain["seconds"] else 0.0
    figures = {
        "benchmark": "export",
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
    if not args.no_record:
        record(figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
