"""The free-text scrubber measured on a labelled corpus of citizens' comments (brief, invariant 4).

The corpus (``tests/data/scrub_corpus_ids.yaml`` and ``scrub_corpus_clean.yaml``) was written for
this purpose: comments about a one-stop desk in Vietnamese with and without diacritics, some in
English, teen-code and emoji; the first file holds comments with identifiers of every kind the
scrubber removes, each labelled with the exact substrings, the second holds comments with none,
most of them with a tempting near-miss (prices, dates, times, counts, room and desk numbers, legal
references, streets and places named alone, common words that are family names). The labelling
rules and the decisions about what is kept are written at the top of each file.

Definitions, as measured here:

* **caught**: an occurrence of a labelled identifier is caught when every letter and digit of it
  (``str.isalnum``) lies inside a span that ``scrub`` replaced by a marker, i.e. none of its
  letters or digits survives in the output. Separators, spaces and invisible characters may stay.
  Every occurrence of a labelled substring counts.
* **recall**: caught occurrences / labelled occurrences.
* **altered**: a clean comment is altered when ``scrub(text) != text`` (any change at all).

Run ``.venv/bin/pytest -q -p no:cacheprovider tests/test_scrub_corpus.py`` to see the figures.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.flows.scrub import find_identifiers, redact, scrub

DATA = Path(__file__).parent / "data"
KINDS = {
    "phone", "cccd", "cmnd", "passport", "tax", "plate", "bank", "email", "handle", "link",
    "dossier", "name", "address",
}  # fmt: skip
MIN_RECALL = 0.98
MAX_ALTERED = 0.02


def _load(name: str) -> list[dict[str, Any]]:
    entries = yaml.safe_load((DATA / name).read_text(encoding="utf-8"))
    assert isinstance(entries, list)
    return entries


IDENTIFIED = _load("scrub_corpus_ids.yaml")
CLEAN = _load("scrub_corpus_clean.yaml")


def _occurrences(text: str, substring: str) -> list[int]:
    positions, start = [], 0
    while (position := text.find(substring, start)) != -1:
        positions.append(position)
        start = position + 1
    return positions


def _caught(text: str) -> set[int]:
    """Positions of ``text`` that scrubbing replaces."""
    covered: set[int] = set()
    for redaction in find_identifiers(text):
        covered.update(range(redaction.start, redaction.end))
    return covered


def measure() -> tuple[Counter[str], Counter[str], list[str], list[str]]:
    """Labelled and caught occurrences per kind, the misses, and the clean comments altered."""
    labelled: Counter[str] = Counter()
    caught: Counter[str] = Counter()
    misses = []
    for entry in IDENTIFIED:
        text = entry["text"]
        covered = _caught(text)
        for kind, substring in entry["ids"]:
            for position in _occurrences(text, substring):
                labelled[kind] += 1
                span = range(position, position + len(substring))
                if all(i in covered for i in span if text[i].isalnum()):
                    caught[kind] += 1
                else:
                    misses.append(f"{kind}: {substring!r} in {text!r} -> {scrub(text)!r}")
    altered = [
        f"{e['text']!r} -> {scrub(e['text'])!r}" for e in CLEAN if scrub(e["text"]) != e["text"]
    ]
    return labelled, caught, misses, altered


def test_corpus_is_well_formed_and_large_enough() -> None:
    """At least 300 comments, ~150 of each sort, every label an exact substring of its comment,
    every kind of identifier present in several spellings."""
    assert len(IDENTIFIED) + len(CLEAN) >= 300
    assert len(IDENTIFIED) >= 150 and len(CLEAN) >= 150
    kinds: Counter[str] = Counter()
    for entry in IDENTIFIED:
        assert entry["ids"], entry["text"]
        for kind, substring in entry["ids"]:
            assert kind in KINDS, kind
            assert substring in entry["text"], (substring, entry["text"])
            kinds[kind] += 1
    for kind in KINDS - {"handle", "link"}:
        assert kinds[kind] >= 5, kind
    for entry in CLEAN:
        assert set(entry) == {"text", "why"}, entry


def test_recall_and_clean_alterations_on_the_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    """Recall on identifiers ≥ 98 %, and at most 2 % of clean comments altered at all."""
    labelled, caught, misses, altered = measure()
    recall = sum(caught.values()) / sum(labelled.values())
    altered_share = len(altered) / len(CLEAN)
    with capsys.disabled():
        print(
            f"\nscrub corpus: recall {sum(caught.values())}/{sum(labelled.values())} = "
            f"{recall:.1%}; clean comments altered {len(altered)}/{len(CLEAN)} = "
            f"{altered_share:.1%}"
        )
        print(
            "  per kind: " + ", ".join(f"{k} {caught[k]}/{labelled[k]}" for k in sorted(labelled))
        )
        for line in misses + altered:
            print("  " + line)
    assert recall >= MIN_RECALL, misses
    assert altered_share <= MAX_ALTERED, altered


def test_scrub_is_exactly_the_reported_redactions() -> None:
    """What the recall measures is what ``scrub`` does: the output is the input with the reported
    spans, and only those, replaced by markers."""
    for entry in IDENTIFIED + CLEAN:
        text = entry["text"]
        assert scrub(text) == redact(text, find_identifiers(text))


def test_scrubbing_the_corpus_twice_changes_nothing() -> None:
    """Idempotent: a stored comment scrubbed again (an export re-scrubs) is unchanged, and a
    marker never becomes an identifier."""
    for entry in IDENTIFIED + CLEAN:
        once = scrub(entry["text"])
        assert scrub(once) == once, entry["text"]
