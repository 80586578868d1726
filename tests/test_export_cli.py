"""``surveybot export`` in every format and level (the row level as one ZIP), ``admin create``,
and ``audit verify`` catching an edited audit row."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import zipfile
from pathlib import Path

from click.testing import CliRunner
from openpyxl import load_workbook

from bot.cli import main
from bot.runtime import Runtime
from settings import load_settings
from tests.exportseed import seed_month


def test_exports_admin_logins_and_tamper_detection(cli_env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(main, ["agency", "add", "ubnd-x", "UBND phường Xuân"]).exit_code == 0
    xlsx = cli_env / "agencies.xlsx"
    result = runner.invoke(
        main, ["export", "--format", "xlsx", "--level", "agency", "-o", str(xlsx)]
    )
    assert result.exit_code == 0, result.output
    header = [c.value for c in load_workbook(xlsx).worksheets[0][1]]
    assert header[:4] == ["release", "agency", "unit", "name"]
    jsonl = runner.invoke(main, ["export", "--format", "jsonl", "--level", "criterion"])
    assert jsonl.exit_code == 0 and jsonl.output == ""
    bad = runner.invoke(main, ["export", "--agency", "nobody"])
    assert bad.exit_code != 0 and "no agency 'nobody'" in bad.output

    made = runner.invoke(
        main,
        ["admin", "create", "xem", "--role", "viewer", "--agency", "ubnd-x"],
        env={"SURVEYBOT_ADMIN_PASSWORD": "mat-khau-dai"},
    )
    assert made.exit_code == 0, made.output
    weak = runner.invoke(main, ["admin", "create", "a", "--password", "short"])
    assert weak.exit_code != 0 and "at least 8" in weak.output
    orphan = runner.invoke(
        main, ["admin", "create", "b", "--role", "viewer", "--password", "mat-khau-dai"]
    )
    assert orphan.exit_code != 0 and "needs --agency" in orphan.output

    assert "intact" in runner.invoke(main, ["audit", "verify"]).output
    db = sqlite3.connect(cli_env / "var" / "surveybot.db")
    seq, detail = db.execute("SELECT seq, detail FROM audit_log WHERE action = 'export'").fetchone()
    edited = json.loads(detail) | {"level": "responses"}
    db.execute("UPDATE audit_log SET detail = ? WHERE seq = ?", (json.dumps(edited), seq))
    db.commit()
    db.close()
    broken = runner.invoke(main, ["audit", "verify"])
    assert broken.exit_code != 0 and f"broken at entry {seq}" in broken.output


def test_the_row_level_export_is_one_zip_of_ratings_comments_and_report(cli_env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0

    async def seed() -> None:
        runtime = await Runtime.create(load_settings())
        try:
            await seed_month(runtime)
        finally:
            await runtime.close()

    asyncio.run(seed())
    target = cli_env / "rows.zip"
    # October is still open to the export until it is released: no row of it leaves.
    early = runner.invoke(main, ["export", "-o", str(target)])
    assert early.exit_code == 0 and "wrote 0 rating rows" in early.output, early.output
    assert "released: 2026-10" in runner.invoke(main, ["release", "publish"]).output
    result = runner.invoke(main, ["export", "--period", "day", "-o", str(target)])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(target) as archive:
        assert archive.namelist() == ["ratings.csv", "comments.csv", "report.json"]
        report = json.loads(archive.read("report.json"))
        ratings = archive.read("ratings.csv").decode("utf-8-sig").splitlines()
        comments = archive.read("comments.csv").decode("utf-8-sig").splitlines()
    assert report["ratings"]["rows_read"] == 151 and report["ratings"]["period_start"] == "month"
    assert len(ratings) == report["ratings"]["rows"] + 1 and "q_comment" not in ratings[0]
    assert comments[0] == "agency,quarter,text" and len(comments) == report["comments"]["rows"] + 1
    rows, dropped = report["ratings"]["rows"], report["ratings"]["rows_dropped"]
    assert f"wrote {rows} rating rows (k 10 for one official, 5 otherwise;" in result.stderr
    assert f"{dropped} dropped; period month)" in result.stderr
    # To a pipe (not a terminal) the ZIP goes to stdout; its members are in the format asked.
    piped = runner.invoke(main, ["export", "--format", "jsonl", "--agency", "ubnd-khac"])
    assert piped.exit_code == 0, piped.output
    with zipfile.ZipFile(io.BytesIO(piped.stdout_bytes)) as archive:
        assert archive.namelist() == ["ratings.jsonl", "comments.jsonl", "report.json"]
        scoped = [json.loads(line) for line in archive.read("ratings.jsonl").splitlines()]
    assert scoped and {row["agency"] for row in scoped} == {"ubnd-khac"}
    db = sqlite3.connect(cli_env / "var" / "surveybot.db")
    levels = [
        json.loads(d)["level"]
        for (d,) in db.execute("SELECT detail FROM audit_log WHERE action = 'export'")
    ]
    db.close()
    assert levels == ["responses", "responses", "responses"]  # the early one too
