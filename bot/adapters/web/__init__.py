"""The web chat: the simulator's page (``simulator``), its channel (``channel``) and its mailboxes
(``mailboxes``: process memory, or Redis whenever the deployment has it, so several processes
behind a load balancer serve one session), so anyone can try a survey, or answer a real one from
a receipt link, with no chat account."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from aiohttp import web

from bot.adapters.base import ChannelPackage, ChannelServices, NoLoops
from bot.adapters.web import simulator
from bot.adapters.web.channel import WebChannel
from bot.adapters.web.mailboxes import make_mailboxes
from bot.channels import Channel
from bot.pages import make_templates
from storage import survey_drafts

SETTINGS = ("default_survey", "max_free_text_chars")


class WebPlugin(NoLoops):
    """Always on: the simulator is how a survey is tried before any chat app is configured."""

    def __init__(self, services: ChannelServices) -> None:
        self.channel = WebChannel(make_mailboxes(services.coordinator))
        self.simulator = simulator.Simulator(
            services.settings,
            services.funnel,
            self.channel,
            services.catalog,
            make_templates(),
            services.coordinator,
            functools.partial(survey_drafts.by_token, services.sessions),
        )

    @property
    def channels(self) -> Mapping[str, Channel]:
        return {self.channel.name: self.channel}

    def routes(self) -> Sequence[web.RouteDef]:
        return simulator.routes(self.simulator)


PACKAGE = ChannelPackage("web", SETTINGS, WebPlugin)
