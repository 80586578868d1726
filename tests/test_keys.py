"""Key rotation (issue 13, item 5): ``surveybot keys rotate`` / ``retire``, every look-up under
every listed key (opt-outs and erasure survive a rotation), keys from the environment, a file or a
mounted secret, group-readable key files refused in production, and no key material in any log."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from sqlalchemy import func, select

from bot.app import create_app
from bot.cli import main
from bot.flows.engine import Reply
from bot.inbound import route_button, route_text
from bot.runtime import Runtime
from bot.schemas import ResultBatch, ResultReport
from settings import load_settings
from storage.models import Agency, OptOut, Response
from storage.pseudonym import (
    KeyError_,
    KeyRing,
    load_keyring,
    retire_document,
    rotate_document,
)
from tests.conftest import REDIS_URL, TEST_KEYS, make_settings, today
from tests.test_channel_pseudonyms import bind, install, report


def key_material(document: str) -> list[str]:
    """Every spelling of every key in a document a log line could carry."""
    spelled = []
    for entries in json.loads(document).values():
        for entry in entries:
            raw = base64.b64decode(entry["key"])
            spelled += [entry["key"], raw.hex(), base64.urlsafe_b64encode(raw).decode()]
            spelled.append(entry["key"][:16])  # even a fragment
    return spelled


def write_keys(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def ids(document: str) -> dict[str, list[str]]:
    return {p: [e["id"] for e in entries] for p, entries in json.loads(document).items()}


# ------------------------------------------------------------------------------ the document
def test_rotation_adds_an_active_key_per_purpose_and_keeps_the_old_for_lookups() -> None:
    rotated, done = rotate_document(TEST_KEYS)
    assert ids(rotated) == {"contact": ["c2", "c1"], "rater": ["r2", "r1"],
                            "dossier": ["d2", "d1"], "address": ["a2", "a1"]}  # fmt: skip
    assert next((r.purpose, r.new_id, r.kept) for r in done) == ("contact", "c2", ("c1",))
    old, new = KeyRing.from_json(TEST_KEYS), KeyRing.from_json(rotated)
    # New pseudonyms use the new key; look-ups still match what the old key wrote.
    assert new.pseudonym("dossier", "x").key_id == "d2"
    assert old.pseudonym("dossier", "x") in new.candidates("dossier", "x")
    assert old.channel_pseudonym("contact", "web", "1") in new.channel_candidates(
        "contact", "web", "1"
    )
    # What the old address key sealed still opens; new seals use the new key (payload follows).
    assert new.open(old.seal("telegram:1")) == "telegram:1"
    assert new.open(old.seal("{}", "payload"), "payload") == "{}"
    assert new.seal("x").startswith("a2.") and new.seal("x", "payload").startswith("a2-payload.")
    # Twice: ids keep growing, nothing is dropped.
    assert ids(rotate_document(rotated)[0])["rater"] == ["r3", "r2", "r1"]


def test_retire_refuses_an_active_or_unknown_key_and_drops_an_old_one() -> None:
    rotated, _ = rotate_document(TEST_KEYS)
    with pytest.raises(KeyError_, match="'c2' is the active 'contact' key"):
        retire_document(rotated, "c2")
    with pytest.raises(KeyError_, match="no key with id 'zz'"):
        retire_document(rotated, "zz")
    retired, purposes = retire_document(rotated, "c1")
    assert purposes == ["contact"] and ids(retired)["contact"] == ["c2"]
    with pytest.raises(KeyError_, match="active"):  # the last key of a purpose is active
        retire_document(retired, "c2")


# ------------------------------------------------------------------------------ the command
def test_keys_rotate_and_retire_commands(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SURVEYBOT_KEYS")
    path = write_keys(cli_env / "keys.json", TEST_KEYS)
    monkeypatch.setenv("SURVEYBOT_KEYS_FILE", str(path))
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    rotated = runner.invoke(main, ["keys", "rotate"])
    assert rotated.exit_code == 0, rotated.output
    assert "contact: new active key c2; kept for look-ups: c1" in rotated.output
    assert not any(k in rotated.output for k in key_material(path.read_text()))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ids(path.read_text())["dossier"] == ["d2", "d1"]
    assert [p.name for p in cli_env.iterdir() if p.name.startswith(".keys-")] == []  # no temp
    active = runner.invoke(main, ["keys", "retire", "c2"])
    assert active.exit_code != 0 and "is the active 'contact' key" in active.output
    retired = runner.invoke(main, ["keys", "retire", "c1"])
    assert retired.exit_code == 0, retired.output
    assert ids(path.read_text())["contact"] == ["c2"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keys_rotate_refuses_keys_from_the_environment(cli_env: Path) -> None:
    result = CliRunner().invoke(main, ["keys", "rotate"])
    assert result.exit_code != 0 and "SURVEYBOT_KEYS" in result.output
    assert "Traceback" not in result.output


async def test_retire_refuses_a_key_an_opt_out_still_uses(
    runtime: Runtime, agency: Agency, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(runtime, "telegram")
    await bind(runtime, agency, "HS-R-1", "telegram", "555")
    await route_text(runtime.service, "telegram", "555", "/stop")
    rotated, _ = rotate_document(TEST_KEYS)
    path = write_keys(cli_env / "keys.json", rotated)
    monkeypatch.delenv("SURVEYBOT_KEYS")
    monkeypatch.setenv("SURVEYBOT_KEYS_FILE", str(path))
    monkeypatch.setenv("SURVEYBOT_DATABASE_URL", runtime.settings.effective_database_url)
    # The command runs its own event loop: off this test's loop, in a thread.
    result = await asyncio.to_thread(CliRunner().invoke, main, ["keys", "retire", "c1"])
    assert result.exit_code != 0 and "1 opt-outs" in result.output, result.output
    assert ids(path.read_text())["contact"] == ["c2", "c1"]


# ------------------------------------------------------------------------------ look-ups
async def test_an_opt_out_and_an_erasure_survive_a_rotation(
    runtime: Runtime, agency: Agency, tmp_path: Path, database_url: str, redis_prefix: str
) -> None:
    """Opt out, rotate, and the citizen is still never surveyed, even after saying /stop again
    under the new key; /delete after the rotation still erases answers given before it."""
    stub = install(runtime, "telegram")["telegram"]
    stopped, rater = "111", "222"
    await bind(runtime, agency, "HS-K-1", "telegram", stopped)
    await bind(runtime, agency, "HS-K-2", "telegram", stopped)
    await route_text(runtime.service, "telegram", stopped, "/stop")
    await bind(runtime, agency, "HS-K-3", "telegram", rater)
    assert await report(runtime, agency, "HS-K-3") == "sent"
    await runtime.service.handle("telegram", rater, Reply("1"))
    await runtime.dispatcher.drain()

    await route_text(runtime.service, "telegram", "444", "/stop")  # a chat with no dossier
    rotated, _ = rotate_document(TEST_KEYS)
    settings = make_settings(
        tmp_path, database_url, redis_url=runtime.settings.redis_url, redis_prefix=redis_prefix
    )
    after = await Runtime.create(
        settings, keyring=KeyRing.from_json(rotated), extra_channels={"telegram": stub}
    )
    try:
        assert after.keyring.known_key_ids("contact") == ["c2", "c1"]
        assert await report(after, agency, "HS-K-1") == "opted_out"
        await route_text(after.service, "telegram", stopped, "/stop")  # again, new key active
        assert await report(after, agency, "HS-K-2") == "opted_out"
        await after.dispatcher.drain()
        told = stub.received[stopped]
        # Only the binding acknowledgements and the /stop replies: never a question.
        assert [t[:7] for t in told] == ["Cảm ơn ", "Cảm ơn ", "Đã xong", "Đã xong"], told
        async with after.sessions() as session:
            key_ids = set((await session.execute(select(OptOut.key_id))).scalars())
        assert "c2" in key_ids  # the opt-out now lives under the active key too

        # A contact stored under the new key is matched with an opt-out under the old one.
        sealed = after.keyring.seal("telegram:444")
        fresh = after.keyring.channel_pseudonym("contact", "telegram", "444").digest
        async with after.sessions() as session:
            assert await after.service._opted_out(session, fresh, sealed)
            assert not await after.service._opted_out(session, fresh)  # the stored hash alone

        # A dossier surveyed before the rotation is still recognised: never a second survey.
        again = await after.service.report_results(
            agency, ResultBatch(results=[ResultReport(dossier_code="HS-K-3", returned_at=today())])
        )
        assert again.items[0].status == "duplicate"

        await route_button(after.service, "telegram", rater, "cmd:delete:yes")
        await after.dispatcher.drain()
        assert stub.received[rater][-1] == "Đã xoá 1 phiếu trả lời."
        async with after.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Response)) == 0
    finally:
        await after.close()


# ------------------------------------------------------------------------------ loading
def test_keys_from_the_environment_a_file_or_a_mounted_secret(tmp_path: Path) -> None:
    var = tmp_path / "var"
    from_env = load_keyring(TEST_KEYS, None, var, production=True)
    assert from_env.known_key_ids("contact") == ["c1"]
    path = write_keys(tmp_path / "keys.json", TEST_KEYS)
    assert load_keyring(None, path, var, production=True).known_key_ids("rater") == ["r1"]
    secrets_dir = tmp_path / "run-secrets"
    secrets_dir.mkdir()
    write_keys(secrets_dir / "surveybot_keys", TEST_KEYS, 0o400)
    mounted = load_keyring(None, secrets_dir, var, production=True)
    assert mounted.known_key_ids("dossier") == ["d1"]
    assert not var.exists()  # nothing generated when keys are given


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_production_refuses_a_key_file_others_can_read(tmp_path: Path, mode: int) -> None:
    path = write_keys(tmp_path / "keys.json", TEST_KEYS, mode)
    with pytest.raises(KeyError_) as caught:
        load_keyring(None, path, tmp_path, production=True)
    message = str(caught.value)
    assert "\n" not in message and f"mode {mode:04o}" in message and "chmod 600" in message
    assert load_keyring(None, path, tmp_path, production=False)  # development only warns not


def test_production_start_with_a_readable_key_file_is_one_clear_line(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_keys(cli_env / "keys.json", TEST_KEYS, 0o644)
    monkeypatch.delenv("SURVEYBOT_KEYS")
    monkeypatch.setenv("SURVEYBOT_KEYS_FILE", str(path))
    monkeypatch.setenv("SURVEYBOT_ENV", "production")
    monkeypatch.setenv("SURVEYBOT_REDIS_URL", REDIS_URL)  # production needs it; not the point here
    result = CliRunner().invoke(main, ["apikey", "create", "x"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    [line] = [x for x in result.output.splitlines() if x.strip()]
    assert "readable by group or others" in line and "chmod 600" in line


async def test_no_key_material_in_any_log_of_a_start_up_and_a_rotation(
    tmp_path: Path,
    database_url: str,
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("SURVEYBOT_KEYS")
    # A development start-up that generates its key set, served and requested.
    settings = load_settings(env="development", var_dir=tmp_path / "dev", database_url=database_url)
    runtime = await Runtime.create(settings)
    generated = (tmp_path / "dev" / "keys.json").read_text()
    try:
        async with TestClient(TestServer(create_app(runtime, background=False))) as client:
            assert (await client.get("/api/v1/openapi.json")).status == 200
            assert (await client.post("/api/v1/results", json={})).status == 401
        logging.getLogger("test").info("runtime: %r", runtime.keyring)
    finally:
        await runtime.close()
    # A rotation and a retirement through the command.
    path = write_keys(cli_env / "keys.json", TEST_KEYS)
    monkeypatch.setenv("SURVEYBOT_KEYS_FILE", str(path))
    monkeypatch.setenv("SURVEYBOT_LOG_LEVEL", "DEBUG")
    runner = CliRunner()
    outputs: list[Any] = []
    for args in (["db", "upgrade"], ["keys", "rotate"], ["keys", "retire", "a1", "--force"]):
        outputs.append((await asyncio.to_thread(runner.invoke, main, args)).output)
    logged = "\n".join([r.getMessage() + str(r.exc_text or "") for r in caplog.records] + outputs)
    assert "generated a development key set" in logged and "rotated" in logged
    secrets = key_material(generated) + key_material(TEST_KEYS) + key_material(path.read_text())
    assert not [s for s in secrets if s in logged]
    assert os.environ.get("SURVEYBOT_KEYS") is None
