"""schemathesis hooks for tests/test_schemathesis.py (loaded through ``SCHEMATHESIS_HOOKS``).

Positive cases are made to follow the rules the document states in words because JSON Schema
cannot state them: codes must name what an admin registered (``1.001234``, ``CB01``, the built-in
surveys), a phone must be a real Vietnamese mobile, ``returned_at`` is not before
``received_at``. Every other rule stays as generated, so "valid data accepted" is checked strictly.
Negative cases are left untouched.
"""

from __future__ import annotations

from typing import Any

import schemathesis

KNOWN = {
    "procedure_code": "1.001234",
    "official_code": "CB01",
    "survey": "mot-cua",
    "phone": "0912 345 678",
}


def _follow_the_rules(item: Any) -> None:
    if not isinstance(item, dict):
        return
    for field, value in KNOWN.items():
        if isinstance(item.get(field), str) and item[field].strip():
            item[field] = value
    returned, received = item.get("returned_at"), item.get("received_at")
    if isinstance(returned, str) and isinstance(received, str) and returned < received:
        item["returned_at"], item["received_at"] = received, returned


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive:
        return case
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("results"), list):
        for item in body["results"]:
            _follow_the_rules(item)
    else:
        _follow_the_rules(body)
    return case
