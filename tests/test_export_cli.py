"""``surveybot export`` in every format and level, ``admin create``, and ``audit verify`` catching
an edited audit row."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner
from openpyxl import load_workbook

from bot.cli import main


def test_exports_admin_logins_and_tamper_detection(cli_env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(main, ["agency", "add", "ubnd-x", "UBND phường Xuân"]).exit_code == 0
    xlsx = cli_env / "agencies.xlsx"
    result = runner.invoke(
        main, ["export", "--format", "xlsx", "--level", "agency", "-o", str(xlsx)]
    )
    assert result.exit_code == 0, result.output
    assert [c.value for c in load_workbook(xlsx).worksheets[0][1]][:3] == ["agency", "unit", "name"]
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
