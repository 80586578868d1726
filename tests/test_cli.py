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
from settings import SettingsError, load_settings


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


@pytest.mark.parametrize(
    ("public_url", "why"),
    [
        ("", "accepts only https:// URLs"),  # the default http://127.0.0.1:8080
        ("http://rating.example.vn", "accepts only https:// URLs"),
        ("https://rating.example.vn:8080", "only to ports 443, 80, 88 or 8443, not 8080"),
    ],
)
def test_production_refuses_a_telegram_webhook_the_bot_api_would_refuse(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, public_url: str, why: str
) -> None:
    """Otherwise setWebhook fails with a logged warning and no update ever arrives."""
    monkeypatch.setenv("SURVEYBOT_ENV", "production")
    monkeypatch.setenv("SURVEYBOT_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("SURVEYBOT_TELEGRAM_TOKEN", "123456:ABC")
    monkeypatch.setenv("SURVEYBOT_TELEGRAM_WEBHOOK_SECRET", "s3cret")
    monkeypatch.setenv("SURVEYBOT_PUBLIC_BASE_URL", public_url)
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code != 0, result.output
    assert "would be refused by the Bot API" in result.output and why in result.output
    assert "SURVEYBOT_PUBLIC_BASE_URL" in result.output and "Traceback" not in result.output


def test_an_inbox_lease_shorter_than_the_tap_mark_is_refused() -> None:
    with pytest.raises(SettingsError, match="INBOX_LEASE_SECONDS must be longer"):
        load_settings(inbox_lease_seconds=5, tap_dedup_seconds=10)
    assert load_settings(inbox_lease_seconds=5, tap_dedup_seconds=2).inbox_lease_seconds == 5


def test_production_takes_an_https_webhook_polling_or_a_local_bot_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = {
        "env": "production",
        "redis_url": "redis://127.0.0.1:6379/0",
        "telegram_token": "123456:ABC",
        "telegram_webhook_secret": "s3cret",
    }
    for fine in (
        {"public_base_url": "https://rating.example.vn"},
        {"public_base_url": "https://rating.example.vn:8443/"},
        {"telegram_polling": True},
        {"telegram_local_bot_api": True},
        {"telegram_register_webhook": False},
    ):
        assert load_settings(**base, **fine).telegram_token
    with pytest.raises(SettingsError, match="TELEGRAM_WEBHOOK_SECRET is required"):
        load_settings(**{**base, "telegram_webhook_secret": None})


def test_terminal_chat_runs_a_survey_to_the_end() -> None:
    result = CliRunner().invoke(main, ["chat", "--survey", "hanoi-4"], input="2\n1, 3\nbỏ qua\n")
    assert result.exit_code == 0, result.output
    assert "1. Hài lòng" in result.output and "2. Không hài lòng" in result.output
    assert "Cảm ơn Ông/Bà đã đánh giá." in result.output


def test_officials_and_procedures_through_the_cli(cli_env: Path) -> None:
    """An admin adds, moves and retires officials and files procedures by field and unit."""
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(main, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    run("db", "upgrade")
    run("agency", "add", "ubnd-a", "UBND phường A")
    run("agency", "add", "ubnd-b", "UBND phường B")
    assert "added to ubnd-a" in run("official", "ubnd-a", "CB01", "Nguyễn Văn A")
    assert "unchanged in" in run("official", "ubnd-a", "CB01", "Nguyễn Văn A")
    run("official", "ubnd-a", "CB02", "Trần Thị B")
    assert "moved to ubnd-b as CB11" in run("official-move", "ubnd-a", "CB01", "ubnd-b", "--as", "CB11")  # fmt: skip
    run("official-leave", "ubnd-a", "CB02")
    listed = [line.split("\t")[:2] for line in run("officials", "ubnd-a").splitlines()]
    assert listed == [["CB01", "moved"], ["CB02", "left"]]
    assert run("officials", "ubnd-b").split("\t")[:2] == ["CB11", "active"]
    again = runner.invoke(main, ["official-move", "ubnd-a", "CB01", "ubnd-b"])
    assert again.exit_code != 0 and "already moved" in again.output and "Traceback" not in again.output  # fmt: skip
    nobody = runner.invoke(main, ["official-leave", "ubnd-a", "CB99"])
    assert nobody.exit_code != 0 and "no official 'CB99'" in nobody.output

    assert "added" in run("procedure", "1.001234", "Đăng ký khai sinh", "--field", "tu-phap", "--assign", "ubnd-a")  # fmt: skip
    run("procedure", "1.001234", "--assign", "ubnd-b", "--unassign", "ubnd-a")
    bad = runner.invoke(main, ["procedure", "1.0001", "X", "--field", "astrology"])
    assert bad.exit_code != 0 and "tu-phap" in bad.output
    nameless = runner.invoke(main, ["procedure", "1.0002"])
    assert nameless.exit_code != 0 and "needs a name" in nameless.output
    assert run("procedures").split("\t")[:2] == ["1.001234", "tu-phap"]
    assert run("procedures", "--agency", "ubnd-a").split("\t")[:3] == ["1.001234", "tu-phap", "unassigned"]  # fmt: skip
    assert run("procedures", "--agency", "ubnd-b").split("\t")[2] == "assigned"
    assert "intact" in run("audit", "verify")
