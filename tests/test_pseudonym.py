"""Keyed pseudonyms and sealed addresses: known answers, separation, rotation, refusal."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from storage.pseudonym import (
    KeyError_,
    KeyRing,
    load_keyring,
    new_token,
    normalise_phone,
    token_digest,
)

RFC4231_KEY = bytes([0xAA]) * 131
RFC4231_DATA = "Test Using Larger Than Block-Size Key - Hash Key First"
RFC4231_HMAC_SHA256 = "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"


def ring(**overrides: list[tuple[str, bytes]]) -> KeyRing:
    keys = {
        "contact": [("c1", b"\x01" * 32)],
        "rater": [("r1", b"\x02" * 32)],
        "dossier": [("d1", b"\x03" * 32)],
        "address": [("a1", b"\x04" * 32)],
    }
    keys.update(overrides)
    return KeyRing(keys)


def test_hmac_known_answer_rfc4231_case_6() -> None:
    keys = ring(rater=[("rfc", RFC4231_KEY)])
    assert keys.pseudonym("rater", RFC4231_DATA).digest == RFC4231_HMAC_SHA256
    assert keys.pseudonym("rater", RFC4231_DATA).key_id == "rfc"


def test_hmac_known_answer_for_a_project_vector() -> None:
    """Pins the exact derivation (UTF-8 of the address string) so a refactor cannot drift."""
    keys = ring()
    assert keys.pseudonym("contact", "telegram:1234567890").digest == (
        "80b2be9ea9797955f3f51e93d6668a26a94e1362427a602cd3bb8c35be2fdb66"  # openssl dgst -mac HMAC
    )


def test_purposes_use_separate_keys() -> None:
    keys = ring()
    value = "telegram:1234567890"
    digests = {keys.pseudonym(p, value).digest for p in ("contact", "rater", "dossier")}
    assert len(digests) == 3


def test_rotation_keeps_old_pseudonyms_findable() -> None:
    old = ring()
    rotated = ring(contact=[("c2", b"\x09" * 32), ("c1", b"\x01" * 32)])
    before = old.pseudonym("contact", "zalo_oa:84912345678")
    after = rotated.pseudonym("contact", "zalo_oa:84912345678")
    assert after.key_id == "c2" and after.digest != before.digest
    assert before in rotated.candidates("contact", "zalo_oa:84912345678")


def test_seal_round_trip_and_rotation() -> None:
    keys = ring()
    sealed = keys.seal("telegram:1234567890")
    assert "1234567890" not in sealed and sealed.startswith("a1.")
    assert keys.seal("telegram:1234567890") != sealed  # fresh nonce each time
    rotated = ring(address=[("a2", b"\x05" * 32), ("a1", b"\x04" * 32)])
    assert rotated.open(sealed) == "telegram:1234567890"
    assert rotated.seal("x").startswith("a2.")


def test_seal_detects_tampering_and_unknown_keys() -> None:
    keys = ring()
    sealed = keys.seal("telegram:1234567890")
    key_id, body = sealed.split(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[-1] ^= 1
    with pytest.raises(InvalidTag):
        keys.open(f"{key_id}.{base64.urlsafe_b64encode(bytes(raw)).decode()}")
    with pytest.raises(KeyError_):
        ring(address=[("zz", b"\x04" * 32)]).open(sealed)


def test_short_or_missing_keys_are_refused() -> None:
    with pytest.raises(KeyError_, match="at least 32"):
        ring(rater=[("r1", b"short")])
    with pytest.raises(KeyError_, match="no key for purpose"):
        KeyRing({"contact": [("c", b"\x01" * 32)]})
    with pytest.raises(KeyError_):
        KeyRing.from_json("{not json")


def test_production_refuses_to_start_without_keys(tmp_path: Path) -> None:
    with pytest.raises(KeyError_, match="no keys configured"):
        load_keyring(None, None, tmp_path, production=True)
    assert not (tmp_path / "keys.json").exists()


def test_development_generates_an_owner_only_key_file_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = load_keyring(None, None, tmp_path, production=False)
    path = tmp_path / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "generated a development key set" in caplog.text
    second = load_keyring(None, None, tmp_path, production=False)
    assert first.pseudonym("rater", "x") == second.pseudonym("rater", "x")
    document = json.loads(path.read_text())
    assert set(document) == {"contact", "rater", "dossier", "address"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0912 345 678", "84912345678"),
        ("+84 912-345-678", "84912345678"),
        ("84912345678", "84912345678"),
    ],
)
def test_phone_numbers_normalise_to_84(raw: str, expected: str) -> None:
    assert normalise_phone(raw) == expected


def test_phone_normalisation_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        normalise_phone("12345")


def test_tokens_are_unguessable_and_deep_link_safe() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    for token in tokens:
        assert len(token) <= 64 and all(c.isalnum() or c in "-_" for c in token)
    assert token_digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_channel_pseudonyms_hash_the_id_with_its_channel() -> None:
    """Telegram chat 123 and Zalo Bot user 123 are two citizens: two pseudonyms."""
    keys = ring()
    telegram = keys.channel_pseudonym("contact", "telegram", "1234567890")
    assert telegram == keys.pseudonym("contact", "telegram:1234567890")  # the pinned vector
    assert telegram.digest == "80b2be9ea9797955f3f51e93d6668a26a94e1362427a602cd3bb8c35be2fdb66"
    assert keys.channel_pseudonym("contact", "zalo_bot", "1234567890") != telegram
    assert keys.channel_pseudonym("rater", "telegram", "1234567890").digest != telegram.digest
    with pytest.raises(ValueError):
        keys.channel_pseudonym("dossier", "telegram", "1234567890")
    with pytest.raises(ValueError):
        keys.channel_pseudonym("contact", "tele:gram", "1234567890")


def test_channel_lookups_also_match_the_legacy_bare_form_under_every_key() -> None:
    """Opt-outs and responses stored before namespacing (and before a rotation) still match;
    the first candidate is what new records store."""
    old = ring()
    legacy = old.pseudonym("contact", "1234567890")
    rotated = ring(contact=[("c2", b"\x09" * 32), ("c1", b"\x01" * 32)])
    found = rotated.channel_candidates("contact", "telegram", "1234567890")
    assert found[0] == rotated.channel_pseudonym("contact", "telegram", "1234567890")
    assert legacy in found and old.channel_pseudonym("contact", "telegram", "1234567890") in found
    assert len(set(found)) == 4  # two forms under two keys
    assert rotated.pseudonym("contact", "1234567890") in found
    assert old.pseudonym("contact", "zalo_bot:1234567890") not in found


def test_a_key_set_without_payload_keys_derives_them_from_the_address_keys() -> None:
    """Key documents written before the payload purpose existed still load and seal payloads,
    under a key of their own (a payload token never opens as an address)."""
    keys = ring()
    sealed = keys.seal('{"text": "Đã chọn: Rất hài lòng"}', "payload")
    assert sealed.startswith("a1-payload.") and "hài lòng" not in sealed
    assert keys.open(sealed, "payload") == '{"text": "Đã chọn: Rất hài lòng"}'
    assert ring().open(sealed, "payload") == keys.open(sealed, "payload")  # derived, not random
    with pytest.raises(KeyError_):
        keys.open(sealed)  # not an address key id
    explicit = ring(payload=[("p1", b"\x06" * 32)])
    assert explicit.seal("x", "payload").startswith("p1.")
    assert explicit.open(sealed, "payload") == keys.open(sealed, "payload")  # still opens
    document = json.loads(KeyRing.generate_document())
    assert "payload" not in document  # `surveybot keys generate` documents stay as they were
    assert KeyRing.from_json(KeyRing.generate_document()).seal("x", "payload")
