"""The channel plug-in seam: what a channel package declares, and what it is given.

A channel is one package under ``bot/adapters/<channel>/`` whose ``__init__`` exports
``PACKAGE``, a :class:`ChannelPackage`; ``bot/adapters/__init__.py`` lists the packages
(``REGISTRY``). Adding a channel is its package plus one line there.

Why this shape: the composition root (``bot/runtime.py``) builds every package the same way, from
one :class:`ChannelServices`, and a package keeps only the services it reads (its settings, the
inbound funnel, the coordinator for its locks, the inbox door, ...), never the runtime. What comes back
is a :class:`ChannelPlugin`: the delivery ports it configured (``bot.channels.Channel``, possibly
none when its settings are absent), its inbound routes (webhooks), its background loops (polling),
what it does in each maintenance round (e.g. ZNS rating reconciliation) and how it closes. The
inbound door every webhook and poller shares (constant-time secrets, the event stored sealed in
the durable inbox before the 2xx, de-duplication by event id, processing exactly once from the
inbox) is ``bot/adapters/gate.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from bot.adapters.gate import Inbox
from bot.channels import Channel
from bot.flows.definition import SurveyCatalog
from bot.inbound import Funnel, TrackedRatings
from settings import Settings
from storage.audit import AuditLog
from storage.coordination import Coordinator
from storage.db import Sessions
from storage.pseudonym import KeyRing

#: A background loop: runs until the event is set.
Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class Readiness:
    """One channel's state as an operator reads it: ``ok``, and words (never a secret)."""

    ok: bool
    details: Mapping[str, str | int | bool | None]

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **self.details}


@dataclass(frozen=True, slots=True)
class ChannelServices:
    """Every service a channel package may ask for. Each is narrow: the funnel, not the
    conversation service; the coordinator, not the runtime."""

    settings: Settings
    keyring: KeyRing
    coordinator: Coordinator
    sessions: Sessions
    audit: AuditLog
    #: The surveys (the simulator previews them).
    catalog: SurveyCatalog
    #: The one way a citizen's message enters the application (``bot/inbound.py``).
    funnel: Funnel
    #: Ratings a platform collects itself (the ZNS template's stars), stored as responses.
    tracked: TrackedRatings
    #: The durable inbox: every verified inbound event is stored here before its 200.
    inbox: Inbox


class ChannelPlugin(Protocol):
    """A built channel package."""

    @property
    def channels(self) -> Mapping[str, Channel]:
        """The delivery ports this package configured, by channel name (empty when off)."""

    def routes(self) -> Sequence[web.RouteDef]:
        """Inbound HTTP routes (webhooks); mounted whether or not the channel is configured,
        so an unconfigured channel answers a clear 404 rather than an unknown path."""

    def loops(self) -> Sequence[Loop]:
        """Background loops to run while the app runs (long polling, webhook registration)."""

    async def maintain(self) -> None:
        """One maintenance round (every minute); a failure is logged and the round goes on."""

    async def readiness(self) -> Mapping[str, Readiness]:
        """Per configured channel, whether it can receive and send now (``/readyz``): its
        webhook registration, its token. A channel not listed is taken as ready."""

    async def close(self) -> None:
        """Release what the package holds (HTTP pools, clients)."""


@dataclass(frozen=True, slots=True)
class ChannelPackage:
    """What a channel package declares."""

    name: str
    #: The ``Settings`` fields the package reads (a test checks that each exists).
    settings: tuple[str, ...]
    build: Callable[[ChannelServices], ChannelPlugin]
    #: Channels of this package whose addresses are phone numbers an agency gives at reception
    #: (a registration's ``phone`` becomes a contact on each, configured or not yet).
    phone_channels: tuple[str, ...] = ()


class NoLoops:
    """Defaults for a plugin with nothing running in the background or to maintain."""

    def loops(self) -> Sequence[Loop]:
        return ()

    async def maintain(self) -> None:
        return None

    async def readiness(self) -> Mapping[str, Readiness]:
        return {}

    async def close(self) -> None:
        return None
