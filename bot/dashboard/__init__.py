"""The admin dashboard: server-rendered pages under ``/admin`` (see ``views``)."""

import jinja2
from aiohttp import web

from bot.dashboard import auth, deadletters, surveys, views


def setup(
    app: web.Application, templates: jinja2.Environment, services: auth.DashboardServices
) -> None:
    views.setup(app, templates, services)
    deadletters.setup(app)
    surveys.setup(app)


__all__ = ["setup"]
