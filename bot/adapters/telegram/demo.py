"""`surveybot demo`: a local Telegram stand-in, so the Telegram path can be tried with no account.

The strict Bot API emulator (``bot.emulators.telegram``, shipped in the package, so the demo
runs from an installed wheel too) runs in-process; the application talks to it with
the very same adapter, webhook and outbox it uses against api.telegram.org. A demo citizen is
driven from a small page, ``/demo/telegram``: ``/demo/telegram?start=<rating token>`` is what
opening ``t.me/<bot>?start=<rating token>`` does on a phone, and the page shows the chat with its
buttons to tap. These routes exist only in the demo; the demo citizen is fictitious.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiohttp import web

from bot.body import read_json
from bot.emulators.telegram import TelegramEmulator
from bot.http_errors import error_response
from settings import Settings

log = logging.getLogger(__name__)
DEMO_TOKEN = "7000000001:DEMO-local-emulator-token"  # noqa: S105 - the emulator's fake bot
DEMO_USER = 8_800_000_001


class TelegramDemo:
    """The running emulator, the settings that point the app at it, and the demo page."""

    def __init__(self, emulator: TelegramEmulator, settings: Settings) -> None:
        self.emulator = emulator
        self.settings = settings

    @classmethod
    async def start(cls, settings: Settings) -> TelegramDemo:
        emulator = TelegramEmulator(DEMO_TOKEN, bot_username="SurveyDemoBot", local_mode=True)
        await emulator.start("127.0.0.1", 0)
        local = f"http://127.0.0.1:{settings.port}"
        demo_settings = settings.model_copy(
            update={
                "telegram_token": DEMO_TOKEN,
                "telegram_bot_username": emulator.bot_username,
                "telegram_api_base_url": emulator.base_url,
                "telegram_webhook_secret": secrets.token_urlsafe(24),
                "telegram_register_webhook": True,
                "telegram_polling": False,
                "public_base_url": settings.public_base_url or local,
            }
        )
        return cls(emulator, demo_settings)

    def setup(self, app: web.Application) -> None:
        app[DEMO_KEY] = self
        app.router.add_get("/demo/telegram", page, name="telegram_demo")
        app.router.add_get("/demo/telegram/api/chat", chat, name="telegram_demo_chat")
        app.router.add_post("/demo/telegram/api/open", open_link, name="telegram_demo_open")
        app.router.add_post("/demo/telegram/api/send", send_text, name="telegram_demo_send")
        app.router.add_post("/demo/telegram/api/tap", tap, name="telegram_demo_tap")

        async def stop(app: web.Application) -> None:
            await self.emulator.stop()

        app.on_cleanup.append(stop)

    def hint(self, base: str) -> str:
        return (
            f"Telegram (a local emulator stands in for api.telegram.org):\n"
            f"  A citizen's phone     : {base}/demo/telegram\n"
            f"  Open a receipt's link : {base}/demo/telegram?start=<rating_token>\n"
            f"                          (what t.me/{self.emulator.bot_username}?start=<rating_token>"
            f" does on a phone)\n"
            f"  or from a shell       : curl -s -X POST {base}/demo/telegram/api/open "
            f"-H 'Content-Type: application/json' -d '{{\"token\": \"<rating_token>\"}}'\n"
        )


DEMO_KEY = web.AppKey("telegram_demo", TelegramDemo)


def _demo(request: web.Request) -> TelegramDemo:
    return request.app[DEMO_KEY]


async def _body(request: web.Request) -> dict[str, Any]:
    body: dict[str, Any] = await read_json(request, require_type=False, object_only=True)
    return body


async def chat(request: web.Request) -> web.Response:
    emulator = _demo(request).emulator
    messages = [
        {
            "id": m.message_id,
            "from_bot": m.from_bot,
            "text": m.text or "",
            "buttons": [[label, data] for label, data in m.buttons if data],
        }
        for m in (emulator.messages_for(DEMO_USER) if DEMO_USER in emulator.citizens else [])
    ]
    return web.json_response({"bot": emulator.bot_username, "messages": messages})


async def open_link(request: web.Request) -> web.Response:
    token = str((await _body(request)).get("token") or "")[:256]
    try:
        await _demo(request).emulator.open_deep_link(DEMO_USER, token or None, first_name="Demo")
    except ValueError as exc:
        return error_response(422, "invalid_link", str(exc))
    return web.json_response({"ok": True}, status=202)


async def send_text(request: web.Request) -> web.Response:
    text = str((await _body(request)).get("text") or "")[:4096]
    emulator = _demo(request).emulator
    try:
        citizen = emulator.citizens.get(DEMO_USER)
        if citizen is None or not citizen.started or citizen.blocked:
            await emulator.open_deep_link(DEMO_USER, None, first_name="Demo")
        await emulator.send_text(DEMO_USER, text)
    except ValueError as exc:
        return error_response(422, "cannot_send", str(exc))
    return web.json_response({"ok": True}, status=202)


async def tap(request: web.Request) -> web.Response:
    body = await _body(request)
    message_id = body.get("message_id")
    if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id > 2**53:
        return error_response(422, "cannot_tap", "message_id must be an integer")
    try:
        await _demo(request).emulator.tap_button(
            DEMO_USER, message_id, str(body.get("data") or "")[:128]
        )
    except ValueError as exc:
        return error_response(422, "cannot_tap", str(exc))
    return web.json_response({"ok": True}, status=202)


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


PAGE = """<!doctype html>
<html lang="vi"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Telegram (demo)</title>
<style>
 body{font-family:system-ui,sans-serif;background:#e7ebf0;margin:0}
 header{background:#517da2;color:#fff;padding:.8em 1em;font-weight:600}
 #log{max-width:560px;margin:0 auto;padding:1em;display:flex;flex-direction:column;gap:.5em}
 .m{padding:.6em .8em;border-radius:10px;max-width:85%;white-space:pre-wrap;background:#fff}
 .me{align-self:flex-end;background:#effdde}
 .kb{display:flex;flex-direction:column;gap:4px;margin-top:.5em}
 .kb button{padding:.5em;border:0;border-radius:6px;background:#dfe9f3;cursor:pointer}
 form{max-width:560px;margin:0 auto;display:flex;gap:.5em;padding:0 1em 1em}
 input{flex:1;padding:.6em}
 p.note{max-width:560px;margin:.5em auto;padding:0 1em;color:#555;font-size:.9em}
</style></head><body>
<header>Telegram &mdash; <span id="bot">bot</span> (demo)</header>
<p class="note">A fictitious citizen on a local stand-in for Telegram. Open a receipt's link with
<code>?start=&lt;rating token&gt;</code>, then answer with the buttons.</p>
<div id="log" data-api="/demo/telegram/api/"></div>
<form id="f"><input id="t" placeholder="Message / Tin nhắn" autocomplete="off">
<button>Send</button></form>
<script src="/static/telegram-demo.js"></script></body></html>
"""
