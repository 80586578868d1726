"""The OpenAPI 3.1 document of the agency API, generated from the same pydantic models that
validate requests, so the document cannot drift from the code (tests check real responses and
run schemathesis against the served document).

It tells the whole truth: every field rule (see ``bot/schemas.py``), both ways to send the key,
every error code by status, 429 with ``Retry-After``, the batch limit of the running
configuration, the rating-link and QR routes, and the webhooks Telegram and Zalo call.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from bot.schemas import (
    ERROR_CODES,
    DossierRegistration,
    ErrorBody,
    RegistrationResult,
    ResultBatch,
    ResultBatchOutcome,
    ResultReport,
)
from bot.sync_schemas import (
    OfficialFields,
    OfficialList,
    OfficialState,
    ProcedureFields,
    ProcedureList,
    ProcedureState,
    SyncOutcome,
)
from settings import Settings

REF = "#/components/schemas/{model}"
DEFAULT_MAX_BATCH_SIZE: int = Settings.model_fields["max_batch_size"].default
LINK_ID_SHAPE = "^[A-Za-z0-9_-]{8,128}$"

ERROR_TEXT = {
    400: "Malformed JSON (not UTF-8, not JSON, not an object, nested too deep, a NUL or a lone "
    "surrogate in a string), or a request that is not valid HTTP",
    401: "Missing, unknown or revoked API key",
    404: "No such route",
    405: "Method not allowed (the Allow header lists the allowed ones)",
    408: "The body was not received in time",
    409: "The dossier was already surveyed",
    413: "Body over SURVEYBOT_MAX_BODY_BYTES, or a batch over SURVEYBOT_MAX_BATCH_SIZE",
    415: "Not Content-Type: application/json",
    422: "Invalid fields (listed in `fields`), or an unknown survey, procedure or official, an "
    "official who left or moved, a procedure not assigned to this unit (named in `fields`)",
    429: "Rate limited: per API key (SURVEYBOT_API_RATE_PER_SECOND, _API_BURST, per agency "
    "SURVEYBOT_API_RATE_BY_AGENCY), or per client for requests without a valid key. Retry "
    "after the Retry-After header's seconds",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds to wait before retrying",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$", "examples": ["2"]},
    }
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _error(status: int, codes: tuple[str, ...] | None = None) -> dict[str, Any]:
    codes = codes or ERROR_CODES[status]
    schema = {"allOf": [_ref("ErrorBody"), {"properties": {"error": {"enum": list(codes)}}}]}
    example: dict[str, Any] = {"error": codes[0], "detail": ERROR_TEXT[status]}
    if status == 429:
        example["retry_after"] = 2
    response = _json(schema, ERROR_TEXT[status])
    response["content"]["application/json"]["example"] = example
    if status == 429:
        response["headers"] = RETRY_AFTER
    return response


def _errors(*statuses: int, **only: tuple[str, ...]) -> dict[str, Any]:
    """Error responses by status; ``only`` narrows a status's codes (``s422=(...)``)."""
    return {str(s): _error(s, only.get(f"s{s}")) for s in statuses}


def _token_parameter() -> dict[str, Any]:
    return {
        "name": "token",
        "in": "path",
        "required": True,
        "description": "The rating token the registration returned",
        "schema": {"type": "string", "pattern": LINK_ID_SHAPE},
    }


def _page(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _webhook(
    operation_id: str, summary: str, path: str, header: str, header_text: str
) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "description": f"Received at `{path}` on this server; answered 2xx only once the "
            "event is durably processed, so a lost answer means a redelivery, never a lost "
            "rating. Only the channel's own servers can sign or authenticate these calls.",
            "parameters": [
                {
                    "name": header,
                    "in": "header",
                    "required": True,
                    "description": header_text,
                    "schema": {"type": "string"},
                }
            ],
            "security": [],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "200": _json({"type": "object"}, "Processed, duplicate or ignored"),
                "400": _json(_ref("ErrorBody"), "Not a JSON object of the channel's kind"),
                "401": _json(_ref("ErrorBody"), "Bad or missing secret or signature"),
                "403": _json(_ref("ErrorBody"), "Wrong secret token (Telegram)"),
                "404": _json(_ref("ErrorBody"), "The channel is not configured"),
                "503": _json(_ref("ErrorBody"), "Not stored; the channel retries"),
            },
        }
    }


@functools.cache
def openapi_document(max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> dict[str, Any]:
    """The document, with ``maxItems`` of a batch the running ``SURVEYBOT_MAX_BATCH_SIZE``."""
    models = [
        DossierRegistration,
        RegistrationResult,
        ResultReport,
        ResultBatch,
        ResultBatchOutcome,
        ErrorBody,
        OfficialList,
        OfficialFields,
        OfficialState,
        ProcedureList,
        ProcedureFields,
        ProcedureState,
        SyncOutcome,
    ]
    outputs = (
        RegistrationResult,
        ResultBatchOutcome,
        ErrorBody,
        OfficialState,
        ProcedureState,
        SyncOutcome,
    )
    modes = [(m, "serialization" if m in outputs else "validation") for m in models]
    _, schemas = models_json_schema(modes, ref_template=REF)  # type: ignore[arg-type]
    components = schemas.get("$defs", {})
    batch = components["ResultBatch"]
    batch["properties"]["results"]["maxItems"] = max_batch_size
    batch["description"] = (
        f"At most {max_batch_size:,} results (SURVEYBOT_MAX_BATCH_SIZE; more is 413 "
        "batch_too_large): a whole day at once."
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Citizen rating channel: agency API",
            "version": "1.0.0",
            "summary": "Register dossiers and report returned results to trigger citizen surveys",
            "description": "Register dossiers at reception and report returned results to "
            "trigger confidential citizen surveys. Authenticate with 'Authorization: Bearer "
            "<api key>' or 'X-Api-Key: <api key>' (keys from `surveybot apikey create`). Every "
            "error is a JSON body with a stable `error` code. See docs/api.md.",
            "contact": {"name": "The operators of this rating channel (see docs/api.md)"},
            "license": {
                "name": "Proprietary: for the province's agencies and their systems",
                "identifier": "LicenseRef-Proprietary",
            },
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer <api key>",
                },
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Api-Key",
                    "description": "The same key in the X-Api-Key header, when Authorization is "
                    "absent or not a Bearer",
                },
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
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
                        "201": _json(
                            _ref("RegistrationResult"), "Registered", links=_rating_links()
                        ),
                        "200": _json(
                            _ref("RegistrationResult"),
                            "Already registered; a new token replaces the old one",
                            links=_rating_links(),
                        ),
                        **_errors(400, 401, 408, 409, 413, 415, 422, 429),
                    },
                }
            },
            "/api/v1/results": {
                "post": {
                    "operationId": "reportResults",
                    "summary": "Report returned results (one or a batch); each triggers one survey",
                    "description": "In a batch, a per-item problem (an unknown survey, procedure "
                    "or official, an official who left or moved, a procedure not assigned to "
                    "this unit) rejects that item only, with its `code` and `fields`; the rest "
                    "go through. One result sent alone and refused is a 422 naming the codes. "
                    "Reporting a dossier again is safe: its item is a duplicate and no second "
                    "survey is sent.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": [_ref("ResultBatch"), _ref("ResultReport")]}
                            }
                        },
                    },
                    "responses": {
                        "200": _json(_ref("ResultBatchOutcome"), "Per-item outcome"),
                        **_errors(400, 401, 408, 413, 415, 422, 429),
                    },
                }
            },
            **_sync_paths(),
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapiDocument",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": _json({"type": "object"}, "The OpenAPI document"),
                        **_errors(400, s400=("bad_request",)),
                    },
                }
            },
            "/r/{token}": {
                "get": {
                    "operationId": "ratingPage",
                    "summary": "The page the receipt's QR code opens: pick a chat app to rate in",
                    "description": "Viewing does not consume the token; binding a chat does.",
                    "security": [],
                    "parameters": [
                        _token_parameter(),
                        {
                            "name": "lang",
                            "in": "query",
                            "required": False,
                            "description": 'The page\'s language: "en" (or "en-US") for '
                            "English; anything else, or nothing, is Vietnamese with an English line",
                            "schema": {"type": "string", "examples": ["en"]},
                        },
                    ],
                    "responses": {
                        "200": _page("The rating page (Vietnamese or English)"),
                        "404": _page("Not a rating token's shape: a polite HTML error page"),
                    },
                }
            },
            "/r/{token}/qr.{kind}": {
                "get": {
                    "operationId": "ratingQr",
                    "summary": "The rating link as a QR code to print on the receipt",
                    "security": [],
                    "parameters": [
                        _token_parameter(),
                        {
                            "name": "kind",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": ["svg", "png"]},
                        },
                        {
                            "name": "target",
                            "in": "query",
                            "required": False,
                            "description": "telegram: a direct Telegram deep link (when a bot "
                            "is configured); any other value or none: the rating page",
                            "schema": {"type": "string", "examples": ["telegram"]},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The QR code",
                            "content": {
                                "image/svg+xml": {"schema": {"type": "string"}},
                                "image/png": {
                                    "schema": {
                                        "type": "string",
                                        "contentMediaType": "image/png",
                                    }
                                },
                            },
                        },
                        "404": _page("Not a token or not svg/png: a polite HTML error page"),
                    },
                }
            },
        },
        "webhooks": {
            "telegramUpdate": _webhook(
                "telegramUpdate",
                "A Telegram Bot API Update (a message, a /start deep link, a button press)",
                "/telegram/webhook",
                "X-Telegram-Bot-Api-Secret-Token",
                "SURVEYBOT_TELEGRAM_WEBHOOK_SECRET, compared in constant time (403 if wrong)",
            ),
            "zaloOaEvent": _webhook(
                "zaloOaEvent",
                "A Zalo Official Account event (a user's message, a ZNS user_feedback rating)",
                "/webhooks/zalo/oa",
                "X-ZEvent-Signature",
                "mac=sha256(app_id + body + timestamp + OA secret), checked on the raw body "
                "before it is parsed; stale or replayed events are refused",
            ),
            "zaloBotEvent": _webhook(
                "zaloBotEvent",
                "A Zalo Bot platform event (a user's text message)",
                "/webhooks/zalo/bot",
                "X-Bot-Api-Secret-Token",
                "SURVEYBOT_ZALO_BOT_WEBHOOK_SECRET, compared in constant time",
            ),
        },
    }


def _rating_links() -> dict[str, Any]:
    """OpenAPI links from a registration to the rating page and QR code it returns."""
    return {
        "ratingPage": {
            "operationId": "ratingPage",
            "parameters": {"token": "$response.body#/rating_token"},
        },
        "ratingQr": {
            "operationId": "ratingQr",
            "parameters": {"token": "$response.body#/rating_token", "kind": "svg"},
        },
        "reportResult": {
            "operationId": "reportResults",
            "description": "Report the result of the dossier just registered",
            "requestBody": {"dossier_code": "$request.body#/dossier_code"},
        },
    }


def _code_parameter(what: str) -> dict[str, Any]:
    return {
        "name": "code",
        "in": "path",
        "required": True,
        "description": what,
        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
    }


def _put(
    operation_id: str, summary: str, description: str, body: str, answers: dict[str, Any]
) -> dict[str, Any]:
    return {
        "put": {
            "operationId": operation_id,
            "summary": summary,
            "description": description,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(body)}},
            },
            "responses": {
                **answers,
                **_errors(400, 401, 408, 413, 415, 422, 429, s422=("invalid_fields",)),
            },
        }
    }


def _sync_paths() -> dict[str, Any]:
    """The sync API: a unit's one-stop system pushes its officials and procedures."""
    scoped = " Scoped to the key's own unit; idempotent (the same push twice changes nothing)."
    official = "The official's code in this unit"
    procedure = "The procedure's national code (mã thủ tục hành chính)"
    return {
        "/api/v1/officials": _put(
            "putOfficials",
            "Push the unit's whole staff; officials left out are marked left",
            "Creates or updates every listed official; every other active official of the "
            "unit is marked left (never deleted: their ratings stay with them). A 422 names "
            "each bad item and field, and nothing is written." + scoped,
            "OfficialList",
            {"200": _json(_ref("SyncOutcome"), "What the push changed")},
        ),
        "/api/v1/officials/{code}": {
            "parameters": [_code_parameter(official)],
            **_put(
                "putOfficial",
                "Create or update one official of the unit",
                "status left retires them: no new result may name them (422 official_left)."
                + scoped,
                "OfficialFields",
                {
                    "201": _json(_ref("OfficialState"), "Created"),
                    "200": _json(_ref("OfficialState"), "Updated, or already so"),
                },
            ),
        },
        "/api/v1/procedures": _put(
            "putProcedures",
            "Push the unit's whole catalogue; procedures left out are unassigned from it",
            "Creates unknown procedures in the national catalogue, assigns every listed one to "
            "the unit, unassigns the others (never deleted). A procedure shared with other "
            "units keeps the name and field the province set: a different one is a 422 naming "
            "the item and field." + scoped,
            "ProcedureList",
            {"200": _json(_ref("SyncOutcome"), "What the push changed")},
        ),
        "/api/v1/procedures/{code}": {
            "parameters": [_code_parameter(procedure)],
            **_put(
                "putProcedure",
                "Create or update one procedure and assign it to the unit",
                "A procedure shared with other units keeps the name and field the province "
                "set: a different one is a 422 naming the field." + scoped,
                "ProcedureFields",
                {
                    "201": _json(_ref("ProcedureState"), "Created"),
                    "200": _json(_ref("ProcedureState"), "Updated, or already so"),
                },
            ),
        },
    }
