"""The web chat simulator at /simulator: try any survey, or answer a real one from a receipt link.

"Try" conversations run the pure engine and store nothing in the database: they are for admins
and citizens curious about a survey; their state is kept with the session's mailbox
(``mailboxes``: process memory, or Redis shared by every process), so any process can take the
next answer. Conversations opened from a rating link go through the real service, exactly as a
chat channel does.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web

from bot.adapters.web.channel import WebChannel
from bot.adapters.web.mailboxes import digest
from bot.body import read_json
from bot.channels import DeliveryError, render
from bot.flows.definition import (
    SurveyCatalog,
    SurveyDefinition,
    SurveyDefinitionError,
    parse_definition,
)
from bot.flows.engine import Choice, Reply, Start, SurveyEngine, parse_payload
from bot.http_errors import error_response
from bot.i18n import normalise_language
from bot.inbound import Funnel
from settings import Settings
from storage.coordination import Coordinator

MAX_TEXT = 2000


@dataclass(slots=True)
class Simulator:
    """What the simulator needs: the web channel's mailboxes (which also keep the "try"
    conversations' state), the one funnel, the survey catalog and the settings (previews:
    default survey, free-text bound), the coordinator (one step of a "try" conversation at a
    time, whichever process takes it), its page template, and the lookup of a draft survey's
    YAML by its preview token (an admin trying an uploaded definition before publishing it)."""

    settings: Settings
    funnel: Funnel
    web: WebChannel
    catalog: SurveyCatalog
    templates: jinja2.Environment
    coordinator: Coordinator
    drafts: Callable[[str], Awaitable[str | None]]


async def page(sim: Simulator, request: web.Request) -> web.Response:
    token = request.query.get("token")
    html = sim.templates.get_template("simulator.html").render(
        lang=normalise_language(request.query.get("lang")),
        token=token,
        draft=request.query.get("draft", "")[:64],
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
    token = body.get("token")
    if isinstance(token, str) and token:
        session = await sim.web.open_session()
        await sim.funnel.bind(token[:128], "web", session, language)
        return web.json_response({"session": session, "mode": "survey"})
    draft = body.get("draft")
    draft_text: str | None = None
    if isinstance(draft, str) and draft:
        draft_text = await sim.drafts(draft[:64])
        if draft_text is None:
            return error_response(
                404, "unknown_draft", "no draft survey with this preview link (or it expired)"
            )
        definition = parse_definition(draft_text, "draft")
    else:
        survey_id = body.get("survey") or sim.settings.default_survey
        if not isinstance(survey_id, str) or survey_id not in sim.catalog:
            return error_response(422, "unknown_survey", f"no survey named {str(survey_id)[:64]!r}")
        definition = sim.catalog.latest(survey_id)
    session = await sim.web.open_session()
    engine = SurveyEngine(definition, sim.settings.max_free_text_chars)
    preview: dict[str, Any] = {
        "survey": definition.id,
        "version": definition.version,
        "state": engine.new_state(secrets.token_hex(3), language),
    }
    if draft_text is not None:  # a draft is in no catalog: its text travels with the session
        preview["definition"] = draft_text
    await sim.web.mailboxes.put_preview(session, preview)
    if not await _preview_step(sim, session, Start()):
        return error_response(404, "unknown_session", "open a simulator session first")
    return web.json_response({"session": session, "mode": "try"})


def _preview_lock(sim: Simulator, session: str) -> contextlib.AbstractAsyncContextManager[None]:
    return sim.coordinator.lock(f"web-try:{digest(session)}")


def _definition(sim: Simulator, preview: dict[str, Any]) -> SurveyDefinition:
    if "definition" in preview:
        try:
            return parse_definition(str(preview["definition"]), "draft")
        except SurveyDefinitionError:  # validated at upload: only a tampered store gets here
            raise web.HTTPNotFound() from None
    return sim.catalog.get(preview["survey"], int(preview["version"]))


async def _preview_step(sim: Simulator, session: str, event: Start | Choice | Reply) -> bool:
    """One step of a "try" conversation, read, stepped and written back under its lock; False
    when the session has no preview (or expired meanwhile)."""
    async with _preview_lock(sim, session):
        preview = await sim.web.mailboxes.get_preview(session)
        if preview is None:
            return False
        definition = _definition(sim, preview)
        engine = SurveyEngine(definition, sim.settings.max_free_text_chars)
        step = engine.step(preview["state"], event)
        if not await sim.web.mailboxes.put_preview(session, {**preview, "state": step.state}):
            return False
        language = step.state["lang"]
        try:
            for prompt in step.prompts:
                await sim.web.send(session, render(prompt, sim.web.capabilities, language))
        except DeliveryError:
            return False
    return True


async def send(sim: Simulator, request: web.Request) -> web.Response:
    body = await _body(request)
    session = body.get("session")
    if not isinstance(session, str) or not await sim.web.exists(session):
        return error_response(404, "unknown_session", "open a simulator session first")
    text, data = body.get("text"), body.get("payload")
    if isinstance(text, str) and len(text) > MAX_TEXT:
        return error_response(
            413, "text_too_long", f"messages are limited to {MAX_TEXT} characters"
        )
    if not (isinstance(text, str) and text.strip()) and not (isinstance(data, str) and data):
        return error_response(422, "empty_message", "send a non-empty 'text' or a button 'payload'")
    if await sim.web.mailboxes.get_preview(session) is not None:  # a "try" session stays one
        event: Start | Choice | Reply
        if isinstance(data, str) and data:
            event = parse_payload(data) or Choice("-", "-", "-")
        else:
            event = Reply(str(text))
        if not await _preview_step(sim, session, event):
            return error_response(404, "unknown_session", "open a simulator session first")
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
    found = await sim.web.mailboxes.poll(session, after)
    if found is None:
        return error_response(404, "unknown_session", "open a simulator session first")
    return web.json_response({"messages": found})


def routes(sim: Simulator) -> list[web.RouteDef]:
    """The page, and the JSON endpoints it polls and posts to (the web channel's inbound)."""
    bound = functools.partial
    return [
        web.get("/simulator", bound(page, sim), name="simulator"),
        web.post("/simulator/api/session", bound(open_session, sim), name="simulator_session"),
        web.post("/simulator/api/send", bound(send, sim), name="simulator_send"),
        web.get("/simulator/api/messages", bound(messages, sim), name="simulator_messages"),
    ]
