"""The admin dashboard: server-rendered pages under ``/admin`` (see ``views``)."""

from bot.dashboard.views import setup

__all__ = ["setup"]
