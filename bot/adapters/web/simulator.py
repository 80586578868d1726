"""The web chat simulator at /simulator: try any survey, or answer a real one from a receipt link.

"Try" conversations run the pure engine on state held in memory and store nothing: they are
for admins and citizens curious about a survey. Conversations opened from a rating link go
through the real service, exactly as a chat channel does.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, field
from typing import Any

import jinja2
from aiohttp import web

from bot.adapters.web.channel import WebChannel
from bot.body import read_json
from bot.channels import render
from bot.flows.definition import SurveyCatalog
from bot.flows.engine import Choice, Reply, Start, SurveyEngine, parse_payload
from bot.http_errors import error_response
from bot.i18n import normalise_language
from bot.inbound import Funnel
from settings import Settings

MAX_TEXT = 2000
MAX_PREVIEWS = 2000


@dataclass
class Preview:
    engine: SurveyEngine
    state: dict[str, Any]


@dataclass(slots=True)
class Simulator:
    """What the simulator needs: the web channel's mailboxes, the one funnel, the survey catalog
    and the settings (previews: default survey, free-text bound), its page template, and the
    "try" conversations it holds in memory."""

    settings: Settings
    funnel: Funnel
    web: WebChannel
    catalog: SurveyCatalog
    templates: jinja2.Environment
    previews: dict[str, Preview] = field(default_factory=dict)


async def page(sim: Simulator, request: web.Request) -> web.Response:
    token = request.query.get("token")
    html = sim.templates.get_template("simulator.html").render(
        lang=normalise_language(request.query.get("lang")),
        token=token,
        surveys=sim.catalog.ids(),
    )
    return web.Response(text=html, content_type="text/html")


async def _body(request: web.Request) -> dict[str, Any]:
    """A JSON object, bounded in size, time and depth, with no NUL (bot/body.py)."""
    body: dict[str, Any] = await read_json(request, require_type=False, object_only=True)
    return body


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


async def open_session(sim: Simulator, request: web.Request) -> web.Response:
    body = await _body(request)
    language = normalise_language(_text(body.get("lang")))
    session = sim.web.open_session()
    token = body.get("token")
    if isinstance(token, str) and token:
        await sim.funnel.bind(token[:128], "web", session, language)
        return web.json_response({"session": session, "mode": "survey"})
    survey_id = body.get("survey") or sim.settings.default_survey
    if not isinstance(survey_id, str) or survey_id not in sim.catalog:
        return error_response(422, "unknown_survey", f"no survey named {str(survey_id)[:64]!r}")
    previews = sim.previews
    while len(previews) >= MAX_PREVIEWS:
        previews.pop(next(iter(previews)))
    engine = SurveyEngine(sim.catalog.latest(survey_id), sim.settings.max_free_text_chars)
    previews[session] = Preview(engine, engine.new_state(secrets.token_hex(3), language))
    await _preview_step(sim, session, Start())
    return web.json_response({"session": session, "mode": "try"})


async def _preview_step(sim: Simulator, session: str, event: Start | Choice | Reply) -> None:
    preview = sim.previews[session]
    step = preview.engine.step(preview.state, event)
    preview.state = step.state
    language = step.state["lang"]
    for prompt in step.prompts:
        await sim.web.send(session, render(prompt, sim.web.capabilities, language))


async def send(sim: Simulator, request: web.Request) -> web.Response:
    body = await _body(request)
    session = body.get("session")
    if not isinstance(session, str) or not sim.web.exists(session):
        return error_response(404, "unknown_session", "open a simulator session first")
    text, data = body.get("text"), body.get("payload")
    if isinstance(text, str) and len(text) > MAX_TEXT:
        return error_response(
            413, "text_too_long", f"messages are limited to {MAX_TEXT} characters"
        )
    if not (isinstance(text, str) and text.strip()) and not (isinstance(data, str) and data):
        return error_response(422, "empty_message", "send a non-empty 'text' or a button 'payload'")
    if session in sim.previews:
        event: Start | Choice | Reply
        if isinstance(data, str) and data:
            event = parse_payload(data) or Choice("-", "-", "-")
        else:
            event = Reply(str(text))
        await _preview_step(sim, session, event)
    elif isinstance(data, str) and data:
        await sim.funnel.button("web", session, data[:128])
    else:
        await sim.funnel.text("web", session, str(text))
    return web.json_response({"ok": True}, status=202)


async def messages(sim: Simulator, request: web.Request) -> web.Response:
    session = request.query.get("session", "")
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        return error_response(400, "bad_after", "'after' must be an integer")
    if not sim.web.exists(session):
        return error_response(404, "unknown_session", "open a simulator session first")
    return web.json_response({"messages": sim.web.poll(session, after)})


def routes(sim: Simulator) -> list[web.RouteDef]:
    """The page, and the JSON endpoints it polls and posts to (the web channel's inbound)."""
    bound = functools.partial
    return [
        web.get("/simulator", bound(page, sim), name="simulator"),
        web.post("/simulator/api/session", bound(open_session, sim), name="simulator_session"),
        web.post("/simulator/api/send", bound(send, sim), name="simulator_send"),
        web.get("/simulator/api/messages", bound(messages, sim), name="simulator_messages"),
    ]
