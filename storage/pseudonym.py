"""Keyed pseudonyms and sealed addresses: the only place a raw citizen identifier is transformed.

Why keyed: a Vietnamese phone number space (~10^9) can be enumerated in minutes, so an unkeyed hash
protects nothing. Each purpose has its own HMAC-SHA256 key so that the operational store (who was
asked) and the confidential store (what was answered) cannot be joined by hash. Every pseudonym
carries the id of the key that made it, so keys can rotate: lookups try every key still known
during the grace period, new values always use the active (first) key.

Keys never live in the database; they come from the environment or a key file (see ``load_keyring``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

#: HMAC purposes. ``contact`` finds an open conversation or an opt-out from an incoming chat;
#: ``rater`` marks a response so its author can erase it; ``dossier`` deduplicates dossiers.
HASH_PURPOSES = ("contact", "rater", "dossier")
#: AES-GCM purposes: delivery addresses we must keep until a survey closes.
SEAL_PURPOSES = ("address",)
ALL_PURPOSES = HASH_PURPOSES + SEAL_PURPOSES
MIN_KEY_BYTES = 32


class KeyError_(ValueError):
    """A key set that cannot be used; the message says which purpose and why."""


@dataclass(frozen=True, slots=True)
class Pseudonym:
    """A keyed hash and the id of the key that made it."""

    key_id: str
    digest: str


def normalise_phone(raw: str) -> str:
    """Vietnamese phone numbers in the ``84…`` form Zalo uses, so 0912… and +84912… hash alike."""
    digits = "".join(ch for ch in raw if ch.isdigit())
    if digits.startswith("0"):
        digits = "84" + digits[1:]
    if not (digits.startswith("84") and 10 <= len(digits) <= 12):
        raise ValueError("not a Vietnamese phone number")
    return digits


def normalise_identifier(value: str) -> str:
    """One canonical spelling per identifier: NFC, trimmed, case-folded."""
    return unicodedata.normalize("NFC", value).strip().casefold()


class KeyRing:
    """Per-purpose keys, active key first, older keys still recognised for lookups."""

    def __init__(self, keys: Mapping[str, Sequence[tuple[str, bytes]]]) -> None:
        for purpose in ALL_PURPOSES:
            entries = keys.get(purpose) or ()
            if not entries:
                raise KeyError_(f"no key for purpose {purpose!r}")
            for key_id, key in entries:
                if len(key) < MIN_KEY_BYTES:
                    raise KeyError_(
                        f"key {key_id!r} for {purpose!r} is {len(key)} bytes; "
                        f"at least {MIN_KEY_BYTES} are required"
                    )
        self._keys = {p: list(keys[p]) for p in ALL_PURPOSES}

    # -- hashing -------------------------------------------------------------------------------
    def pseudonym(self, purpose: str, value: str) -> Pseudonym:
        """The pseudonym under the active key: what new records store."""
        key_id, key = self._hash_keys(purpose)[0]
        return Pseudonym(key_id, _hmac(key, value))

    def candidates(self, purpose: str, value: str) -> list[Pseudonym]:
        """The pseudonyms under every known key: what a lookup must match during rotation."""
        return [Pseudonym(kid, _hmac(key, value)) for kid, key in self._hash_keys(purpose)]

    def known_key_ids(self, purpose: str) -> list[str]:
        return [kid for kid, _ in self._keys[purpose]]

    def _hash_keys(self, purpose: str) -> list[tuple[str, bytes]]:
        if purpose not in HASH_PURPOSES:
            raise ValueError(f"unknown hash purpose {purpose!r}")
        return self._keys[purpose]

    # -- sealing -------------------------------------------------------------------------------
    def seal(self, plaintext: str, purpose: str = "address") -> str:
        """AES-GCM with a fresh nonce; the purpose is bound as associated data."""
        key_id, key = self._seal_keys(purpose)[0]
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), purpose.encode())
        return f"{key_id}.{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"

    def open(self, token: str, purpose: str = "address") -> str:
        key_id, _, body = token.partition(".")
        for kid, key in self._seal_keys(purpose):
            if kid == key_id:
                raw = base64.urlsafe_b64decode(body.encode("ascii"))
                return AESGCM(key).decrypt(raw[:12], raw[12:], purpose.encode()).decode("utf-8")
        raise KeyError_(f"sealed with unknown key {key_id!r}")

    def _seal_keys(self, purpose: str) -> list[tuple[str, bytes]]:
        if purpose not in SEAL_PURPOSES:
            raise ValueError(f"unknown seal purpose {purpose!r}")
        return self._keys[purpose]

    # -- (de)serialisation ---------------------------------------------------------------------
    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        try:
            doc = json.loads(text)
            keys = {
                purpose: [
                    (str(e["id"]), base64.b64decode(e["key"], validate=True)) for e in entries
                ]
                for purpose, entries in doc.items()
            }
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyError_(f"key document is not valid: {exc.__class__.__name__}") from None
        return cls(keys)

    @staticmethod
    def generate_document() -> str:
        doc = {
            purpose: [{"id": f"{purpose[0]}1", "key": base64.b64encode(os.urandom(32)).decode()}]
            for purpose in ALL_PURPOSES
        }
        return json.dumps(doc, indent=2)


def _hmac(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def load_keyring(
    keys_json: str | None, keys_file: Path | None, var_dir: Path, production: bool
) -> KeyRing:
    """Keys from the environment, then a key file; in development, generate one once.

    Production refuses to start without keys: silently generating one there would make every
    pseudonym unlinkable after the next deploy and hide a misconfiguration.
    """
    if keys_json:
        return KeyRing.from_json(keys_json)
    path = keys_file or var_dir / "keys.json"
    if path.exists():
        return KeyRing.from_json(path.read_text(encoding="utf-8"))
    if production:
        raise KeyError_(
            "no keys configured: set SURVEYBOT_KEYS or SURVEYBOT_KEYS_FILE "
            "(generate one with `surveybot keys generate`)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(KeyRing.generate_document())
    log.warning(
        "generated a development key set in %s (owner-only); never use it in production", path
    )
    return KeyRing.from_json(path.read_text(encoding="utf-8"))


def new_token() -> str:
    """An unguessable rating token, short enough for a Telegram deep link (≤64 of A-Za-z0-9_-)."""
    return secrets.token_urlsafe(24)


def token_digest(token: str) -> str:
    """Rating tokens and API keys carry 190+ bits of entropy, so a plain SHA-256 suffices."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
