"""Agency API v1: reception (dossiers, results) and sync (officials, procedures), one key each
agency, every route scoped to the key's own unit."""

from __future__ import annotations

from aiohttp import web

from bot.api import reception, sync
from bot.api.auth import AGENCY_API, AgencyApi


def routes() -> list[web.RouteDef]:
    return [*reception.routes(), *sync.routes()]


__all__ = ["AGENCY_API", "AgencyApi", "routes"]
