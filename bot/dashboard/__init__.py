"""The admin dashboard: server-rendered pages under ``/admin`` (figures in ``views``,
management in ``manage``, ``staff``, ``catalogue`` and ``criteria_admin`` (the quarterly
agency-level criteria), who may do what in ``scope``; for province admins, survey templates in
``surveys`` and dead letters in ``deadletters``)."""

from __future__ import annotations

import jinja2
from aiohttp import web

from bot.dashboard import catalogue, criteria_admin, deadletters, manage, staff, surveys, views
from bot.dashboard.auth import DashboardServices


def setup(app: web.Application, templates: jinja2.Environment, services: DashboardServices) -> None:
    views.setup(app, templates, services)
    manage.setup(app)
    staff.setup(app)
    catalogue.setup(app)
    criteria_admin.setup(app)
    deadletters.setup(app)
    surveys.setup(app)


__all__ = ["setup"]
