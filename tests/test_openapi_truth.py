"""The OpenAPI document tells the whole truth (issue 13, item 3).

It is a valid OpenAPI 3.1 document (openapi-spec-validator) that passes Redocly's linter with
its recommended-strict rules (scripts/openapi-lint, installed by scripts/test) and our own lint rules ( every error by status with its codes
as an enum, 429 with Retry-After, both key schemes, the rating routes, the webhooks, license and
contact, examples valid against their schemas), and every rule it states is the server's:
dates as numbers or date-times are refused, text is trimmed before its length counts exactly as
the pattern says, the phone and date-order rules, the batch limit, the error codes that real
responses carry, and 429 answers match it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_core import OpenAPI
from openapi_spec_validator import validate

from bot.app import create_app
from bot.openapi import DEFAULT_MAX_BATCH_SIZE, openapi_document
from bot.runtime import Runtime
from bot.schemas import ALL_ERROR_CODES, ERROR_CODES, trimmed_pattern
from storage.pseudonym import KeyRing
from tests.conftest import make_settings, today
from tests.test_api import BAD_REQUESTS, _Req, _Resp, auth, result

Client = TestClient[Any, Any]
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for section in ("paths", "webhooks"):
        for path, item in doc.get(section, {}).items():
            found += [(path, m, op) for m, op in item.items() if m in HTTP_METHODS]
    return found


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = doc["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def schema_validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A JSON Schema 2020-12 validator for ``schema`` that resolves the document's refs."""
    root = {**schema, "components": doc["components"]}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())


# ------------------------------------------------------------------------------ the document
def test_the_document_is_valid_openapi_3_1() -> None:
    validate(openapi_document())
    validate(openapi_document(25))


REDOCLY = Path(__file__).parents[1] / "scripts" / "openapi-lint"


def test_the_document_passes_redocly_lint_with_no_warning(tmp_path: Path) -> None:
    """Redocly CLI (recommended-strict: every warning is an error) on the document as served."""
    cli = REDOCLY / "node_modules" / ".bin" / "redocly"
    assert cli.exists(), f"Redocly CLI missing: run scripts/test (npm ci --prefix {REDOCLY})"
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(openapi_document()))
    env = {**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}
    run = subprocess.run(  # noqa: S603 - our own pinned tool on our own file
        [str(cli), "lint", "--config", str(REDOCLY / "redocly.yaml"), "--format=json",
         str(document)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    report = json.loads(run.stdout)
    problems = [(p["ruleId"], p["message"]) for p in report["problems"]]
    assert run.returncode == 0 and report["totals"]["errors"] == 0, problems
    assert report["totals"]["warnings"] == 0, problems


def test_the_document_passes_our_lint_rules() -> None:
    doc = openapi_document()
    problems: list[str] = []
    info = doc["info"]
    if not info.get("license", {}).get("name") or not info.get("contact"):
        problems.append("info needs a license and a contact")
    schemes = doc["components"]["securitySchemes"]
    if schemes.get("bearer", {}).get("scheme") != "bearer":
        problems.append("no Bearer scheme")
    if (schemes.get("apiKey", {}).get("in"), schemes.get("apiKey", {}).get("name")) != (
        "header",
        "X-Api-Key",
    ):
        problems.append("no X-Api-Key scheme")
    if {"bearer", "apiKey"} - {k for alt in doc["security"] for k in alt}:
        problems.append("both schemes must be accepted")
    seen_ids = set()
    for path, method, op in operations(doc):
        where = f"{method.upper()} {path}"
        for field in ("operationId", "summary", "responses"):
            if not op.get(field):
                problems.append(f"{where}: no {field}")
        if op.get("operationId") in seen_ids:
            problems.append(f"{where}: duplicate operationId")
        seen_ids.add(op.get("operationId"))
        if not any(s.startswith("2") for s in op["responses"]):
            problems.append(f"{where}: no success response")
        for status, response in op["responses"].items():
            if not response.get("description"):
                problems.append(f"{where} {status}: no description")
            for link_name, link in response.get("links", {}).items():
                targets = {o.get("operationId") for _, _, o in operations(doc)}
                if link["operationId"] not in targets:
                    problems.append(f"{where} {status}: link {link_name} leads nowhere")
            if path.startswith("/api/v1/") and path != "/api/v1/openapi.json" and status >= "400":
                schema = response["content"]["application/json"]["schema"]
                enum = schema["allOf"][1]["properties"]["error"]["enum"]
                if not set(enum) <= set(ERROR_CODES[int(status)]):
                    problems.append(f"{where} {status}: codes not the server's")
                if status == "429" and "Retry-After" not in response.get("headers", {}):
                    problems.append(f"{where} 429: no Retry-After header")
        if path.startswith("/api/v1/") and method == "post":
            missing = {"400", "401", "413", "415", "422", "429"} - set(op["responses"])
            if missing:
                problems.append(f"{where}: undocumented {sorted(missing)}")
            for parameter in op.get("parameters", []):
                if not parameter.get("description"):
                    problems.append(f"{where}: parameter {parameter['name']} undescribed")
    for name in ("telegramUpdate", "zaloOaEvent", "zaloBotEvent"):
        if name not in doc.get("webhooks", {}):
            problems.append(f"no webhook {name}")
    for path in ("/r/{token}", "/r/{token}/qr.{kind}"):
        if path not in doc["paths"]:
            problems.append(f"no route {path}")
    error = doc["components"]["schemas"]["ErrorBody"]["properties"]["error"]
    if set(error["enum"]) != set(ALL_ERROR_CODES):
        problems.append("ErrorBody.error is not the enum of every code")
    assert problems == []


def test_every_example_is_valid_against_its_schema() -> None:
    doc = openapi_document()
    checked = 0
    for name, schema in doc["components"]["schemas"].items():
        for example in schema.get("examples", []):
            schema_validator(doc, schema).validate(example)
            checked += 1
        for prop in schema.get("properties", {}).values():
            for option in [prop, *prop.get("anyOf", [])]:
                for example in option.get("examples", []):
                    schema_validator(doc, option).validate(example)
                    checked += 1
        assert "examples" in schema or name in ("UnitStep", "ResultBatch", "FieldProblem", "ResultItemOutcome", "ResultBatchOutcome", "OfficialItem", "ProcedureItem"), name  # fmt: skip
    for _, _, op in operations(doc):
        for status, response in op["responses"].items():
            for media in response.get("content", {}).values():
                if "example" in media:
                    schema_validator(doc, media["schema"]).validate(media["example"])
                    assert media["example"]["error"] in ERROR_CODES[int(status)]
                    checked += 1
    assert checked >= 20


def test_the_batch_limit_is_the_configured_one() -> None:
    for size in (DEFAULT_MAX_BATCH_SIZE, 25):
        batch = openapi_document(size)["components"]["schemas"]["ResultBatch"]
        assert batch["properties"]["results"]["maxItems"] == size
        assert batch["properties"]["results"]["minItems"] == 1


# ------------------------------------------------------------------------------ the server
async def test_served_document_is_the_running_configuration(
    client: Client, runtime: Runtime
) -> None:
    served = await (await client.get("/api/v1/openapi.json")).json()
    limit = runtime.settings.max_batch_size
    assert served == json.loads(json.dumps(openapi_document(limit)))


async def test_served_maxitems_follows_a_non_default_batch_size(
    tmp_path: Path, database_url: str, keyring: KeyRing
) -> None:
    settings = make_settings(tmp_path, database_url, max_batch_size=25)
    runtime = await Runtime.create(settings, keyring=keyring)
    try:
        async with TestClient(TestServer(create_app(runtime, background=False))) as client:
            served = await (await client.get("/api/v1/openapi.json")).json()
    finally:
        await runtime.close()
    assert served["components"]["schemas"]["ResultBatch"]["properties"]["results"]["maxItems"] == 25


DATES = [
    ("a number", 20261120),
    ("a unix time", 1_764_000_000),
    ("a float", 1.5),
    ("a date-time", "2026-11-20T00:00:00"),
    ("a date-time with zone", "2026-11-20T00:00:00Z"),
    ("a day first", "20/11/2026"),
    ("no dashes", "20261120"),
    ("an impossible day", "2026-02-30"),
    ("full-width digits", "２０２６-１１-２０"),
]


@pytest.mark.parametrize(("name", "value"), DATES, ids=[d[0] for d in DATES])
async def test_a_date_is_a_yyyy_mm_dd_string_and_nothing_else(
    client: Client, api_key: str, name: str, value: Any
) -> None:
    doc = openapi_document()
    date_schema = {"type": "string", "format": "date"}
    assert not jsonschema.Draft202012Validator(
        date_schema, format_checker=jsonschema.FormatChecker()
    ).is_valid(value)
    for path, body in (
        ("/api/v1/results", {"dossier_code": "HS-D", "returned_at": value}),
        ("/api/v1/results", result("HS-D", received_at=value)),
        ("/api/v1/results", result("HS-D", steps=[{"unit": "U", "due_at": value, "done_at": "2026-11-20"}])),
        ("/api/v1/dossiers", {"dossier_code": "HS-D", "due_at": value}),
    ):  # fmt: skip
        response = await client.post(path, headers=auth(api_key), json=body)
        answer = await response.json()
        assert response.status == 422 and answer["error"] == "invalid_fields", (path, answer)
        OpenAPI.from_dict(doc).validate_response(
            _Req(path, json.dumps(body)),
            _Resp(response.status, json.dumps(answer).encode(), "application/json"),
        )


async def test_a_valid_date_string_is_accepted(client: Client, api_key: str) -> None:
    response = await client.post(
        "/api/v1/results", headers=auth(api_key), json=result("HS-OK", received_at="2026-01-01")
    )
    assert response.status == 200


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("X" * 64, True),
        ("  " + "X" * 64 + "\u3000\n", True),  # trimmed first, then counted
        ("X" * 65, False),
        (" \t\u00a0", False),
        ("", False),
        ("A\u0085", True),  # U+0085 is trimmed
        ("\ufeffA", True),  # U+FEFF is not: two characters
        ("\ufeff" + "A" * 64, False),
    ],
)
async def test_text_lengths_count_after_trimming_exactly_as_the_pattern_says(
    client: Client, api_key: str, value: str, accepted: bool
) -> None:
    pattern = re.compile(trimmed_pattern(64, True))
    assert bool(pattern.match(value)) is accepted
    body = {"dossier_code": value}
    response = await client.post("/api/v1/dossiers", headers=auth(api_key), json=body)
    assert (response.status in (200, 201)) is accepted, await response.text()


@pytest.mark.parametrize(
    ("phone", "status"),
    [
        ("0912 345 678", 201),
        ("+84 (0) 912.345.678", 201),
        ("   ", 201),  # blank: no phone
        ("024 3825 3536", 422),  # a Hà Nội landline
        ("+1 202 555 0143", 422),
        ("0912 abc 678", 422),
        ("091234", 422),
    ],
)
async def test_the_phone_rule_is_the_documented_one(
    client: Client, api_key: str, phone: str, status: int
) -> None:
    doc = openapi_document()
    prop = doc["components"]["schemas"]["DossierRegistration"]["properties"]["phone"]
    assert "Vietnamese mobile" in prop["anyOf"][0]["description"]
    body = {"dossier_code": f"HS-P-{phone}", "phone": phone}
    response = await client.post("/api/v1/dossiers", headers=auth(api_key), json=body)
    answer = await response.json()
    assert response.status == status, answer
    assert phone.strip() not in json.dumps(answer) or not phone.strip()  # never echoed


async def test_date_order_is_the_documented_rule(client: Client, api_key: str) -> None:
    doc = openapi_document()
    assert "must not be before" in doc["components"]["schemas"]["ResultReport"]["description"]
    later = (today() + dt.timedelta(days=3)).isoformat()
    response = await client.post(
        "/api/v1/results", headers=auth(api_key), json=result("HS-O", received_at=later)
    )
    answer = await response.json()
    assert response.status == 422 and "returned_at is before received_at" in json.dumps(answer)


async def test_error_codes_of_real_answers_are_in_the_documented_enums(
    client: Client, runtime: Runtime, api_key: str
) -> None:
    doc = openapi_document()
    spec = OpenAPI.from_dict(doc)
    seen: set[tuple[int, str]] = set()
    for bad in BAD_REQUESTS:
        kwargs: dict[str, Any] = dict(bad[1])  # type: ignore[call-overload]
        headers = {**auth(api_key), **kwargs.pop("headers", {})}
        response = await client.post("/api/v1/results", headers=headers, **kwargs)
        answer = await response.json()
        if response.status >= 400:
            seen.add((response.status, answer["error"]))
            body = kwargs.get("data") or json.dumps(kwargs.get("json")).encode()
            request = _Req("/api/v1/results", "")
            request.body = body if isinstance(body, bytes) else body.encode()
            request.content_type = headers.get("Content-Type", "application/json")
            spec.validate_response(
                request, _Resp(response.status, json.dumps(answer).encode(), "application/json")
            )
    too_many = {"results": [result(f"HS-{i}") for i in range(runtime.settings.max_batch_size + 1)]}
    response = await client.post("/api/v1/results", headers=auth(api_key), json=too_many)
    seen.add((response.status, (await response.json())["error"]))
    for path in ("/api/v1/results", "/api/v1/dossiers"):
        for headers in ({}, auth("sbk_wrong")):
            response = await client.post(path, headers=headers, json=result("X"))
            seen.add((response.status, (await response.json())["error"]))
    assert {(401, "missing_api_key"), (401, "invalid_api_key"), (413, "batch_too_large")} <= seen
    for status, code in seen:
        assert code in ERROR_CODES[status], (status, code)


async def test_a_429_answer_matches_the_document(client: Client, runtime: Runtime) -> None:
    spec = OpenAPI.from_dict(openapi_document())
    body = json.dumps(result("X"))
    for _ in range(runtime.settings.api_bad_key_burst + 5):
        response = await client.post(
            "/api/v1/results", headers={"X-Api-Key": "sbk_wrong"}, json=result("X")
        )
        if response.status == 429:
            break
    assert response.status == 429, "no 429 after the bad-key burst"
    answer = await response.read()
    resp = _Resp(429, answer, "application/json")
    resp.headers = {"Retry-After": response.headers["Retry-After"]}
    spec.validate_response(_Req("/api/v1/results", body), resp)
    parsed = json.loads(answer)
    assert parsed["error"] == "too_many_bad_keys"
    assert int(response.headers["Retry-After"]) == parsed["retry_after"] >= 1
