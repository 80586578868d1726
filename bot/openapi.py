"""The OpenAPI 3.1 document of the agency API, generated from the same pydantic models that
validate requests, so the document cannot drift from the code (a test checks real responses)."""

from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from bot.schemas import (
    DossierRegistration,
    ErrorBody,
    RegistrationResult,
    ResultBatch,
    ResultBatchOutcome,
    ResultReport,
)

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed JSON",
        401: "Missing or invalid API key",
        409: "The dossier was already surveyed",
        413: "Body or batch too large",
        415: "Not JSON",
        422: "Invalid fields, unknown survey, procedure or official",
    }
    return {str(c): _json("ErrorBody", text[c]) for c in codes}


@functools.cache
def openapi_document() -> dict[str, Any]:
    models = [
        DossierRegistration,
        RegistrationResult,
        ResultReport,
        ResultBatch,
        ResultBatchOutcome,
        ErrorBody,
    ]
    outputs = (RegistrationResult, ResultBatchOutcome, ErrorBody)
    modes = [(m, "serialization" if m in outputs else "validation") for m in models]
    _, schemas = models_json_schema(modes, ref_template=REF)  # type: ignore[arg-type]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Citizen rating channel: agency API",
            "version": "1.0.0",
            "description": "Register dossiers at reception and report returned results to trigger "
            "confidential citizen surveys. Authenticate with 'Authorization: Bearer <api key>'.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/api/v1/dossiers": {
                "post": {
                    "operationId": "registerDossier",
                    "summary": "Register a dossier at reception; returns a rating link and QR code",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("DossierRegistration")}},
                    },
                    "responses": {
                        "201": _json("RegistrationResult", "Registered"),
                        "200": _json("RegistrationResult", "Already registered; a new token"),
                        **_errors(400, 401, 409, 413, 415, 422),
                    },
                }
            },
            "/api/v1/results": {
                "post": {
                    "operationId": "reportResults",
                    "summary": "Report returned results (one or a batch); each triggers one survey",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": [_ref("ResultBatch"), _ref("ResultReport")]}
                            }
                        },
                    },
                    "responses": {
                        "200": _json("ResultBatchOutcome", "Per-item outcome"),
                        **_errors(400, 401, 413, 415, 422),
                    },
                }
            },
        },
    }
