"""The web chat simulator at /simulator: try any survey, or answer a real one from a receipt link.

"Try" conversations run the pure engine on state held in memory and store nothing: they are
for admins and citizens curious about a survey. Conversations opened from a rating link go
through the real service, exactly as a chat channel does.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
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
from bot.inbound import route_button, route_text
from bot.service import SurveyService
from settings import Settings

MAX_TEXT = 2000
MAX_PREVIEWS = 2000
TEMPLATES = web.AppKey("templates", jinja2.Environment)


@dataclass
class Preview:
    engine: SurveyEngine
    state: dict[str, Any]


PREVIEWS = web.AppKey("previews", dict)


@dataclass(frozen=True, slots=True)
class SimulatorServices:
    """What the simulator needs: the web channel's mailboxes, the inbound funnel's service, the
    survey catalog (previews) and the settings (default survey, free-text bound)."""

    settings: Settings
    service: SurveyService
    web: WebChannel
    catalog: SurveyCatalog


SIMULATOR = web.AppKey("simulator_services", SimulatorServices)


async def page(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    token = request.query.get("token")
    html = (
        request.app[TEMPLATES]
        .get_template("simulator.html")
        .render(
            lang=normalise_language(request.query.get("lang")),
            token=token,
            surveys=sim.catalog.ids(),
        )
    )
    return web.Response(text=html, content_type="text/html")


async def _body(request: web.Request) -> dict[str, Any]:
    """A JSON object, bounded in size, time and depth, with no NUL (bot/body.py)."""
    body: dict[str, Any] = await read_json(request, require_type=False, object_only=True)
    return body


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


async def open_session(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    body = await _body(request)
    language = normalise_language(_text(body.get("lang")))
    session = sim.web.open_session()
    token = body.get("token")
    if isinstance(token, str) and token:
        await sim.service.bind(token[:128], "web", session, language)
        return web.json_response({"session": session, "mode": "survey"})
    survey_id = body.get("survey") or sim.settings.default_survey
    if not isinstance(survey_id, str) or survey_id not in sim.catalog:
        return error_response(422, "unknown_survey", f"no survey named {str(survey_id)[:64]!r}")
    previews: dict[str, Preview] = request.app[PREVIEWS]
    while len(previews) >= MAX_PREVIEWS:
        previews.pop(next(iter(previews)))
    engine = SurveyEngine(sim.catalog.latest(survey_id), sim.settings.max_free_text_chars)
    previews[session] = Preview(engine, engine.new_state(secrets.token_hex(3), language))
    await _preview_step(request, session, Start())
    return web.json_response({"session": session, "mode": "try"})


async def _preview_step(request: web.Request, session: str, event: Start | Choice | Reply) -> None:
    sim = request.app[SIMULATOR]
    preview: Preview = request.app[PREVIEWS][session]
    step = preview.engine.step(preview.state, event)
    preview.state = step.state
    language = step.state["lang"]
    for prompt in step.prompts:
        await sim.web.send(session, render(prompt, sim.web.capabilities, language))


async def send(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
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
    if session in request.app[PREVIEWS]:
        event: Start | Choice | Reply
        if isinstance(data, str) and data:
            event = parse_payload(data) or Choice("-", "-", "-")
        else:
            event = Reply(str(text))
        await _preview_step(request, session, event)
    elif isinstance(data, str) and data:
        await route_button(sim.service, "web", session, data[:128])
    else:
        await route_text(sim.service, "web", session, str(text))
    return web.json_response({"ok": True}, status=202)


async def messages(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    session = request.query.get("session", "")
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        return error_response(400, "bad_after", "'after' must be an integer")
    if not sim.web.exists(session):
        return error_response(404, "unknown_session", "open a simulator session first")
    return web.json_response({"messages": sim.web.poll(session, after)})


def setup(app: web.Application, templates: jinja2.Environment, services: SimulatorServices) -> None:
    app[TEMPLATES] = templates
    app[SIMULATOR] = services
    app[PREVIEWS] = {}
    app.router.add_get("/simulator", page, name="simulator")
    app.router.add_post("/simulator/api/session", open_session, name="simulator_session")
    app.router.add_post("/simulator/api/send", send, name="simulator_send")
    app.router.add_get("/simulator/api/messages", messages, name="simulator_messages")
