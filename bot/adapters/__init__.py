"""The channel packages, one per chat platform. Adding a channel: its package under
``bot/adapters/<channel>/`` exporting ``PACKAGE`` (``bot/adapters/base.py``), and one line here."""

from __future__ import annotations

from bot.adapters import telegram, web, zalo
from bot.adapters.base import ChannelPackage

REGISTRY: tuple[ChannelPackage, ...] = (
    web.PACKAGE,
    zalo.PACKAGE,
    telegram.PACKAGE,
)
