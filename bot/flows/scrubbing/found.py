"""What a detector reports: a span of ``View.norm`` and the kind of identifier found there."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Found:
    start: int
    end: int
    #: "number" (phones and ID numbers), "passport", "plate", "dossier", "email", "handle", "link",
    #: "name", "address".
    kind: str
