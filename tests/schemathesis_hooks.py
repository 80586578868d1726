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

from bot.sync_schemas import SYNC_MAX_ITEMS

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


#: The reference data the rules above name: a positive sync keeps them as the fixture has them,
#: or the next positive result would be refused as documented (an official who left, a
#: procedure unassigned), which is right but not what "valid data accepted" is about.
KEPT_OFFICIALS = {"CB01": "Nguyễn Văn A", "CB02": "Trần Thị B"}
KEPT_PROCEDURE = {"code": "1.001234", "name": "Đăng ký khai sinh"}


def _listed(items: list[Any], kept: list[dict[str, Any]]) -> list[Any]:
    """The kept items first, then the generated ones, each code once (the document says a
    code is listed once, which JSON Schema cannot state), within the list's size limit."""
    seen = {item["code"] for item in kept}
    unique = []
    for item in items:
        code = item.get("code") if isinstance(item, dict) else None
        if code not in seen and (not isinstance(code, str) or code.strip() not in seen):
            seen.add(code.strip() if isinstance(code, str) else code)
            unique.append(item)
    return [*kept, *unique][:SYNC_MAX_ITEMS]


def _keep_the_reference_data(path: str, case: Any) -> None:
    body = case.body
    code = (case.path_parameters or {}).get("code")
    if path == "/api/v1/officials" and isinstance(body.get("officials"), list):
        kept = [{"code": c, "name": n} for c, n in KEPT_OFFICIALS.items()]
        body["officials"] = _listed(body["officials"], kept)
    elif path == "/api/v1/officials/{code}" and code in KEPT_OFFICIALS:
        body.update(name=KEPT_OFFICIALS[code], status="active")
    elif path == "/api/v1/procedures" and isinstance(body.get("procedures"), list):
        body["procedures"] = _listed(body["procedures"], [dict(KEPT_PROCEDURE)])
    elif path == "/api/v1/procedures/{code}" and code == KEPT_PROCEDURE["code"]:
        body.clear()
        body["name"] = KEPT_PROCEDURE["name"]


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive:
        return case
    body = case.body
    if isinstance(body, dict) and case.method.upper() == "PUT":
        _keep_the_reference_data(case.operation.path, case)
        return case
    if isinstance(body, dict) and isinstance(body.get("results"), list):
        for item in body["results"]:
            _follow_the_rules(item)
    else:
        _follow_the_rules(body)
    return case
