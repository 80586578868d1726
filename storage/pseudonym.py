"""Keyed pseudonyms and sealed addresses: the only place a raw citizen identifier is transformed.

Why keyed: a Vietnamese phone number space (~10^9) can be enumerated in minutes, so an unkeyed hash
protects nothing. Each purpose has its own HMAC-SHA256 key so that the operational store (who was
asked) and the confidential store (what was answered) cannot be joined by hash. Every pseudonym
carries the id of the key that made it, so keys can rotate: lookups try every key still known
during the grace period, new values always use the active (first) key.

Chat and user ids are only unique within their channel, so contact and rater pseudonyms hash
``"<channel>:<id>"`` (``channel_pseudonym``); lookups (``channel_candidates``) also try the bare
id that was hashed before, under every key, so older opt-outs and responses keep matching.

Keys never live in the database; they come from the environment or a key file (see ``load_keyring``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import phonenumbers
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

#: HMAC purposes. ``contact`` finds an open conversation or an opt-out from an incoming chat;
#: ``rater`` marks a response so its author can erase it; ``dossier`` deduplicates dossiers.
HASH_PURPOSES = ("contact", "rater", "dossier")
#: Purposes whose values are only unique within one channel (Telegram chat 123 and Zalo Bot user
#: 123 are two people): their pseudonyms hash ``"<channel>:<value>"``.
CHANNEL_PURPOSES = ("contact", "rater")
#: AES-GCM purposes: delivery addresses we must keep until a survey closes, outbound message
#: payloads (questions, and acknowledgements that echo the answer) until they are delivered, and
#: inbound channel events (a citizen's answer, with the chat id) until they are processed.
SEAL_PURPOSES = ("address", "payload", "inbox")
#: Seal purposes a key document may omit: their keys are then derived from the ``address`` keys
#: (HKDF-SHA256, one derived key per address key), so key sets written before the purpose
#: existed still load, and rotating the address keys rotates these too.
DERIVED_SEAL_PURPOSES = ("payload", "inbox")
ALL_PURPOSES = HASH_PURPOSES + SEAL_PURPOSES
REQUIRED_PURPOSES = tuple(p for p in ALL_PURPOSES if p not in DERIVED_SEAL_PURPOSES)
MIN_KEY_BYTES = 32
VN_COUNTRY_CODE = 84
_MOBILE_TYPES = (
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
)


class KeyError_(ValueError):
    """A key set that cannot be used; the message says which purpose and why."""


@dataclass(frozen=True, slots=True)
class Pseudonym:
    """A keyed hash and the id of the key that made it."""

    key_id: str
    digest: str


def normalise_phone(raw: str) -> str:
    """A Vietnamese mobile number as Zalo spells it, ``84`` + the national significant number, so
    that every spelling of one phone gives one pseudonym (an opt-out or a de-duplication by phone
    that misses one spelling silently fails).

    Parsed with ``phonenumbers`` (region VN): "0912 345 678", "0912-345-678", "84912345678",
    "+84 (0) 912 345 678", "(+84) 912.345.678" and full-width digits all give ``84912345678``.
    Refused, with the reason and never the number: letters, numbers of another country, numbers
    that cannot exist, and landlines (the phone is for the ZNS rating template, which reaches
    mobiles only).
    """
    text = unicodedata.normalize("NFKC", raw).strip()
    if any(ch.isalpha() for ch in text):
        raise ValueError("not a phone number: it contains letters")
    try:
        number = phonenumbers.parse(text, "VN")
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    if number.country_code != VN_COUNTRY_CODE:
        raise ValueError("not a Vietnamese phone number: the country code is not +84")
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid Vietnamese phone number: wrong length or prefix")
    if phonenumbers.number_type(number) not in _MOBILE_TYPES:
        raise ValueError("not a Vietnamese mobile number: ZNS messages reach mobiles only")
    return f"{VN_COUNTRY_CODE}{phonenumbers.national_significant_number(number)}"


def normalise_identifier(value: str) -> str:
    """One canonical spelling per identifier: NFC, trimmed, case-folded."""
    return unicodedata.normalize("NFC", value).strip().casefold()


class KeyRing:
    """Per-purpose keys, active key first, older keys still recognised for lookups."""

    def __init__(self, keys: Mapping[str, Sequence[tuple[str, bytes]]]) -> None:
        for purpose in ALL_PURPOSES:
            entries = keys.get(purpose) or ()
            if not entries and purpose in REQUIRED_PURPOSES:
                raise KeyError_(f"no key for purpose {purpose!r}")
            for key_id, key in entries:
                if len(key) < MIN_KEY_BYTES:
                    raise KeyError_(
                        f"key {key_id!r} for {purpose!r} is {len(key)} bytes; "
                        f"at least {MIN_KEY_BYTES} are required"
                    )
                if "." in key_id and purpose in SEAL_PURPOSES:  # sealed values are "<id>.<body>"
                    raise KeyError_(f"key id {key_id!r} for {purpose!r} must not contain '.'")
        self._keys = {p: list(keys.get(p) or ()) for p in ALL_PURPOSES}
        for purpose in DERIVED_SEAL_PURPOSES:
            # Explicit keys first (the active one seals); the derived ones stay as fallbacks, so
            # what was sealed before explicit keys were added still opens.
            self._keys[purpose] += [
                (f"{kid}-{purpose}", _derive(key, purpose)) for kid, key in self._keys["address"]
            ]

    def __repr__(self) -> str:  # key ids only: a key must never reach a log or a traceback
        ids = {p: self.known_key_ids(p) for p in ALL_PURPOSES}
        return f"KeyRing({ids})"

    # -- hashing -------------------------------------------------------------------------------
    def pseudonym(self, purpose: str, value: str) -> Pseudonym:
        """The pseudonym of exactly ``value`` under the active key.

        For contacts and raters use ``channel_pseudonym``: a bare chat id is not unique."""
        key_id, key = self._hash_keys(purpose)[0]
        return Pseudonym(key_id, _hmac(key, value))

    def candidates(self, purpose: str, value: str) -> list[Pseudonym]:
        """The pseudonyms under every known key: what a lookup must match during rotation."""
        return [Pseudonym(kid, _hmac(key, value)) for kid, key in self._hash_keys(purpose)]

    def channel_pseudonym(self, purpose: str, channel: str, value: str) -> Pseudonym:
        """What new records store for a channel identifier: the active key over
        ``"<channel>:<value>"``, so equal ids on two channels never share a pseudonym."""
        return self.pseudonym(purpose, namespaced(purpose, channel, value))

    def channel_candidates(self, purpose: str, channel: str, value: str) -> list[Pseudonym]:
        """What a lookup of a channel identifier must match, best first: the namespaced form
        under every key, then the legacy bare form under every key (records written before
        pseudonyms were namespaced: opt-outs and responses live on, and must still be honoured
        and erasable). The first entry is always what ``channel_pseudonym`` gives."""
        return self.candidates(purpose, namespaced(purpose, channel, value)) + self.candidates(
            purpose, value
        )

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
        """A new key set; derived purposes are left out (they follow the address keys)."""
        doc = {
            purpose: [{"id": f"{purpose[0]}1", "key": base64.b64encode(os.urandom(32)).decode()}]
            for purpose in REQUIRED_PURPOSES
        }
        return json.dumps(doc, indent=2)


def _hmac(key: bytes, value: str) -> str:
    # The one-shot C digest: the same HMAC-SHA256, a third of the cost of hmac.new (a batch
    # of results computes several per item).
    return hmac.digest(key, value.encode("utf-8"), "sha256").hex()


def namespaced(purpose: str, channel: str, value: str) -> str:
    """The value a channel identifier is hashed as: ``"<channel>:<value>"``."""
    if purpose not in CHANNEL_PURPOSES:
        raise ValueError(f"{purpose!r} pseudonyms are not namespaced by channel")
    if not channel or ":" in channel:
        raise ValueError(f"not a channel name: {channel!r}")
    return f"{channel}:{value}"


def _derive(key: bytes, purpose: str) -> bytes:
    """An independent 256-bit key for ``purpose`` from an address key (HKDF-SHA256)."""
    info = f"surveybot seal key: {purpose}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


#: File names looked for when the key file setting names a directory (a mounted secret such as
#: ``/run/secrets``); a directory holding a single file also works.
SECRET_FILE_NAMES = ("keys.json", "surveybot_keys", "surveybot-keys", "surveybot_keys.json")


def resolve_key_file(path: Path) -> Path:
    """The key file itself: ``path``, or the key file inside a mounted-secret directory."""
    if not path.is_dir():
        return path
    for name in SECRET_FILE_NAMES:
        if (path / name).is_file():
            return path / name
    files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    if len(files) == 1:
        return files[0]
    raise KeyError_(
        f"key directory {path} holds no key file: put the key set in {path / SECRET_FILE_NAMES[0]}"
    )


def check_key_file_mode(path: Path) -> None:
    """Refuse a key file that the group or other users may read (or write)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyError_(
            f"key file {path} is readable by group or others (mode {mode:04o}): "
            f"run `chmod 600 {path}` (for a mounted secret, mount it with mode 0400)"
        )


def load_keyring(
    keys_json: str | None, keys_file: Path | None, var_dir: Path, production: bool
) -> KeyRing:
    """Keys from the environment, then a key file or a mounted-secret directory; in development,
    generate one once.

    Production refuses to start without keys: silently generating one there would make every
    pseudonym unlinkable after the next deploy and hide a misconfiguration. It also refuses a key
    file the group or others can read. Nothing here logs a key, only paths and key ids.
    """
    if keys_json:
        return KeyRing.from_json(keys_json)
    path = resolve_key_file(keys_file or var_dir / "keys.json")
    if path.exists():
        if production:
            check_key_file_mode(path)
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


# -- rotation ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rotation:
    """What a rotation did, per purpose: the new active id and the ids kept for look-ups."""

    purpose: str
    new_id: str
    kept: tuple[str, ...]


def _parse_document(text: str) -> dict[str, list[dict[str, str]]]:
    KeyRing.from_json(text)  # refuses an unusable document before anything is written
    doc: dict[str, list[dict[str, str]]] = json.loads(text)
    return doc


def _next_id(purpose: str, taken: set[str]) -> str:
    prefix = purpose[0]
    numbers = [int(m.group(1)) for t in taken if (m := re.fullmatch(rf"{prefix}(\d+)", t))]
    n = max(numbers, default=len(taken)) + 1
    while f"{prefix}{n}" in taken:
        n += 1
    return f"{prefix}{n}"


def rotate_document(text: str) -> tuple[str, list[Rotation]]:
    """A new key document: for each purpose in ``text``, a new random key with a new id first
    (it becomes the active key), every older key kept after it for look-ups until retired."""
    doc = _parse_document(text)
    taken = {str(e["id"]) for entries in doc.values() for e in entries}
    done = []
    for purpose in [p for p in ALL_PURPOSES if doc.get(p)]:
        key_id = _next_id(purpose, taken)
        taken.add(key_id)
        kept = tuple(str(e["id"]) for e in doc[purpose])
        doc[purpose] = [{"id": key_id, "key": base64.b64encode(os.urandom(32)).decode()}] + doc[
            purpose
        ]
        done.append(Rotation(purpose, key_id, kept))
    new = json.dumps(doc, indent=2)
    KeyRing.from_json(new)
    return new, done


def retire_document(text: str, key_id: str) -> tuple[str, list[str]]:
    """The document without ``key_id``; refused for an unknown id or an active (first) key.
    Returns the new document and the purposes the id was removed from."""
    doc = _parse_document(text)
    purposes = [p for p, entries in doc.items() if any(str(e["id"]) == key_id for e in entries)]
    if not purposes:
        raise KeyError_(f"no key with id {key_id!r} in the key document")
    for purpose in purposes:
        if str(doc[purpose][0]["id"]) == key_id:
            raise KeyError_(
                f"key {key_id!r} is the active {purpose!r} key: rotate first, then retire it "
                "after the grace period"
            )
        doc[purpose] = [e for e in doc[purpose] if str(e["id"]) != key_id]
    new = json.dumps(doc, indent=2)
    KeyRing.from_json(new)
    return new, purposes


def write_key_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically with an owner-only (0600) file: a crash leaves the old or the
    new document, never half of one, and the new file is never readable by others."""
    fd, tmp = tempfile.mkstemp(prefix=".keys-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def new_token() -> str:
    """An unguessable rating token, short enough for a Telegram deep link (≤64 of A-Za-z0-9_-)."""
    return secrets.token_urlsafe(24)


def token_digest(token: str) -> str:
    """Rating tokens and API keys carry 190+ bits of entropy, so a plain SHA-256 suffices."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
