"""The surveybot command as an admin uses it: agencies, keys, export, settings errors, chat."""

from __future__ import annotations

import csv
import io
import sqlite3
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import main


def test_agency_key_and_empty_export(cli_env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    added = runner.invoke(main, ["agency", "add", "ubnd-x", "UBND phường X"])
    assert added.exit_code == 0, added.output
    again = runner.invoke(main, ["agency", "add", "ubnd-x", "UBND phường X"])
    assert (
        again.exit_code != 0
        and "already exists" in again.output
        and "Traceback" not in again.output
    )
    key = runner.invoke(main, ["apikey", "create", "ubnd-x"])
    assert key.exit_code == 0 and key.output.strip().startswith("sbk_")
    missing = runner.invoke(main, ["apikey", "create", "nobody"])
    assert missing.exit_code != 0 and "no agency with code 'nobody'" in missing.output
    exported = runner.invoke(main, ["export", "--format", "csv"])
    assert exported.exit_code == 0
    with zipfile.ZipFile(io.BytesIO(exported.stdout_bytes)) as archive:
        ratings = archive.read("ratings.csv").decode("utf-8-sig")
    header = next(csv.reader(io.StringIO(ratings)))
    assert header[:3] == ["response", "agency", "procedure"]
    audit = runner.invoke(main, ["audit", "verify"])
    assert audit.exit_code == 0 and "intact" in audit.output
    # Cutting off the newest entry leaves a valid chain; the anchor file beside it tells.
    db = sqlite3.connect(cli_env / "var" / "surveybot.db")
    (last,) = db.execute("SELECT max(seq) FROM audit_log").fetchone()
    db.execute("DELETE FROM audit_log WHERE seq = ?", (last,))
    db.commit()
    db.close()
    cut = runner.invoke(main, ["audit", "verify"])
    assert cut.exit_code != 0 and f"audit entries from {last} on are in the anchor" in cut.output


def test_bad_setting_is_one_clear_line(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURVEYBOT_PORT", "not-a-port")
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code != 0
    assert "SURVEYBOT_PORT" in result.output and "Traceback" not in result.output


def test_production_without_keys_refuses(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURVEYBOT_ENV", "production")
    monkeypatch.setenv("SURVEYBOT_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.delenv("SURVEYBOT_KEYS")
    result = CliRunner().invoke(main, ["apikey", "create", "x"])
    assert result.exit_code != 0 and "no keys configured" in result.output


def test_production_without_redis_refuses_to_start(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No silent fall-back to in-process coordination when several processes may run."""
    monkeypatch.setenv("SURVEYBOT_ENV", "production")
    monkeypatch.delenv("SURVEYBOT_REDIS_URL", raising=False)
    for command in (["serve"], ["db", "upgrade"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code != 0, result.output
        assert "SURVEYBOT_REDIS_URL is required in production" in result.output
        assert "Traceback" not in result.output


def test_terminal_chat_runs_a_survey_to_the_end() -> None:
    result = CliRunner().invoke(main, ["chat", "--survey", "hanoi-4"], input="2\n1, 3\nbỏ qua\n")
    assert result.exit_code == 0, result.output
    assert "1. Hài lòng" in result.output and "2. Không hài lòng" in result.output
    assert "Cảm ơn Ông/Bà đã đánh giá." in result.output
