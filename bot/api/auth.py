"""What every agency API route shares: the services it is given, the key check, the body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from bot import limits
from bot.body import ascii_or_none, read_json
from bot.http_errors import error_response
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


async def agency_of(request: web.Request) -> Agency | web.Response:
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


async def read_body(request: web.Request) -> Any:
    """Bounded in size, time and depth; NUL and lone surrogates refused (bot/body.py)."""
    return await read_json(request)


def ok(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)
