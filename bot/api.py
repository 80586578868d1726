"""Agency API v1: register a dossier at reception, report returned results (which triggers surveys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bot import limits
from bot.body import ascii_or_none, read_json
from bot.http_errors import error_response, validation_response
from bot.schemas import DossierRegistration, ResultBatch, ResultReport
from bot.service import SurveyService
from settings import Settings
from storage.models import Agency


@dataclass(frozen=True, slots=True)
class AgencyApi:
    """What the agency API needs: the reception use cases, the batch limit, the doors' limits."""

    service: SurveyService
    settings: Settings
    doors: limits.Doors


AGENCY_API = web.AppKey("agency_api", AgencyApi)


async def _agency(request: web.Request) -> Agency | web.Response:
    """The calling agency, within its key's rate limit; else the 401 or 429 answer."""
    doors = request.app[AGENCY_API].doors
    agency = await _authenticate(request)
    if isinstance(agency, web.Response):
        return await limits.limit_bad_key(doors, request) or agency
    return await limits.limit_api_key(doors, agency, request) or agency


async def _authenticate(request: web.Request) -> Agency | web.Response:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        key = request.headers.get("X-Api-Key", "")
    if not key.strip():
        return error_response(401, "missing_api_key", "send 'Authorization: Bearer <api key>'")
    if ascii_or_none(key.strip()) is None:  # API keys are printable ASCII; anything else is wrong
        return error_response(401, "invalid_api_key", "this API key is unknown or revoked")
    agency = await request.app[AGENCY_API].service.authenticate(key.strip())
    if agency is None:
        return error_response(401, "invalid_api_key", "this API key is unknown or revoked")
    return agency


async def _json(request: web.Request) -> Any:
    """Bounded in size, time and depth; NUL and lone surrogates refused (bot/body.py)."""
    return await read_json(request)


def _ok(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)


async def register_dossier(request: web.Request) -> web.Response:
    agency = await _agency(request)
    if isinstance(agency, web.Response):
        return agency
    body = await _json(request)
    registration = DossierRegistration.model_validate(body)
    result = await request.app[AGENCY_API].service.register_dossier(agency, registration)
    return _ok(result, 201 if result.created else 200)


async def report_results(request: web.Request) -> web.Response:
    """Accepts ``{"results": [...]}`` (a batch) or one result object."""
    agency = await _agency(request)
    if isinstance(agency, web.Response):
        return agency
    body = await _json(request)
    api = request.app[AGENCY_API]
    if isinstance(body, dict) and "results" not in body:
        body = {"results": [body]}
    if isinstance(body, dict) and isinstance(body.get("results"), list):
        limit = api.settings.max_batch_size
        if len(body["results"]) > limit:
            return error_response(
                413, "batch_too_large", f"at most {limit} results per request; split the batch"
            )
    try:
        batch = ResultBatch.model_validate(body)
    except ValidationError as exc:
        return validation_response(exc)
    outcome = await api.service.report_results(agency, batch)
    return _ok(outcome, 200)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/dossiers", register_dossier, name="register_dossier"),
        web.post("/api/v1/results", report_results, name="report_results"),
    ]


__all__ = ["AGENCY_API", "AgencyApi", "ResultReport", "routes"]
