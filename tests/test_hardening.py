"""No 500, ever: each cause issue 13 found, reproduced through the real app, answered with a 4xx.

Every test here sends what an outsider could send (no login unless the page needs one) and checks
what the client sees: a 4xx with a JSON body naming the problem (a polite HTML page on the
dashboard), never a 500 or a dropped connection, and no traceback in the logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from bot.app import create_app
from bot.dashboard import auth
from bot.emulators.zalo import sign_event
from bot.runtime import Runtime
from storage.models import InboxEvent
from storage.pseudonym import KeyRing
from tests.conftest import REDIS_URL, _truncate, add_test_agency, make_settings

Client = TestClient[Any, Any]
TG_SECRET = "tg-secret-0123456789"
BOT_SECRET = "zalo-bot-secret-0123"
APP_ID = "1234567890"
OA_SECRET = "oa-secret-abcdef"
DEAD = "http://127.0.0.1:9"  # nothing listens: no test may need a platform to answer
NESTED = b"[" * 100_000 + b"]" * 100_000
NESTED_OBJ = b'{"a":' * 5000 + b"1" + b"}" * 5000

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=False)


def hardened_settings(tmp_path: Path, database_url: str, redis_prefix: str, **extra: Any) -> Any:
    return make_settings(
        tmp_path,
        database_url,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        telegram_token="7654321098:AAhardening-tests",
        telegram_api_base_url=f"{DEAD}/bot",
        telegram_bot_username="survey_test_bot",
        telegram_webhook_secret=TG_SECRET,
        telegram_register_webhook=False,
        zalo_app_id=APP_ID,
        zalo_app_secret="app-secret",
        zalo_oa_secret=OA_SECRET,
        zalo_refresh_token="refresh-0",
        zalo_oauth_base_url=DEAD,
        zalo_openapi_base_url=DEAD,
        zalo_business_base_url=DEAD,
        zalo_http_timeout_seconds=0.5,
        zalo_bot_token="bot-token-0",
        zalo_bot_api_base_url=DEAD,
        zalo_bot_webhook_secret=BOT_SECRET,
        **{"body_read_timeout_seconds": 1.0, **extra},
    )


@pytest.fixture
async def hardened(
    tmp_path: Path, database_url: str, keyring: KeyRing, redis_prefix: str
) -> AsyncIterator[Runtime]:
    """Every channel configured (pointing nowhere), on PostgreSQL: every route is live."""
    rt = await Runtime.create(
        hardened_settings(tmp_path, database_url, redis_prefix), keyring=keyring
    )
    await _truncate(rt)
    await add_test_agency(rt)
    yield rt
    await rt.close()


@pytest.fixture
async def web(hardened: Runtime) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(hardened, background=False))) as client:
        yield client


@pytest.fixture
async def key(hardened: Runtime) -> str:
    return await hardened.service.create_api_key("ubnd-test", "tests")


@pytest.fixture
def no_traces(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test when anything logged an error or a traceback."""
    caplog.set_level(logging.INFO)
    yield
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


def now_ms() -> int:
    return int(time.time() * 1000)


def signed(body: bytes, timestamp: str) -> dict[str, str]:
    return {
        "X-ZEvent-Signature": sign_event(APP_ID, body, timestamp, OA_SECRET),
        "Content-Type": "application/json",
    }


async def raw_http(client: Client, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (headers aiohttp's client would refuse to send)."""
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
        return status, headers, body
    finally:
        writer.close()


async def json_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"] and body["detail"]
    return dict(body)


# ================================================================== deeply nested JSON
@pytest.mark.parametrize("payload", [NESTED, NESTED_OBJ], ids=["array", "object"])
async def test_deeply_nested_json_is_refused_on_every_json_route(
    web: Client, key: str, payload: bytes, no_traces: None
) -> None:
    auth_header = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for path in ("/api/v1/results", "/api/v1/dossiers"):
        await json_error(await web.post(path, data=payload, headers=auth_header), 400)
    for path in ("/simulator/api/session", "/simulator/api/send"):
        response = await web.post(path, data=payload, headers={"Content-Type": "application/json"})
        await json_error(response, 400)
    tg = await web.post(
        "/telegram/webhook",
        data=payload,
        headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET},
    )
    await json_error(tg, 400)
    bot = await web.post(
        "/webhooks/zalo/bot", data=payload, headers={"X-Bot-Api-Secret-Token": BOT_SECRET}
    )
    await json_error(bot, 400)
    # Signed with a timestamp the OA webhook can find before parsing: still refused, as 400.
    stamp = str(now_ms())
    oa_body = b'{"app_id":"' + APP_ID.encode() + b'","timestamp":"' + stamp.encode() + b'","x":'
    oa_body += payload + b"}"
    oa = await web.post("/webhooks/zalo/oa", data=oa_body, headers=signed(oa_body, stamp))
    await json_error(oa, 400)


async def test_zalo_oa_checks_the_signature_before_parsing(
    web: Client, hardened: Runtime, no_traces: None
) -> None:
    """An unsigned body is refused as unsigned (401), whatever it holds: nothing is parsed."""
    for body in (NESTED, b"not json at all", b"\xff\xfe", b'{"app_id": 1}'):
        response = await web.post("/webhooks/zalo/oa", data=body)
        error = await json_error(response, 401)
        assert error["error"] == "invalid_signature"
    async with hardened.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(InboxEvent)) == 0


# ================================================================== headers and secrets
async def test_non_ascii_api_keys_are_401_json(web: Client, no_traces: None) -> None:
    body = b'{"dossier_code": "HS-1"}'
    for header in ("Authorization: Bearer kh\xf3a-b\xed-m\xe2t", "X-Api-Key: kh\xf3a"):
        for encoding in ("latin-1", "utf-8"):
            request = (
                "POST /api/v1/dossiers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"{header}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode(encoding) + body
            status, headers, payload = await raw_http(web, request)
            assert status == 401, payload
            assert headers["content-type"].startswith("application/json")
            assert json.loads(payload)["error"] in {"invalid_api_key", "missing_api_key"}
    scheme = "Authorization: B\xe9arer abc\r\n"
    status, _, payload = await raw_http(
        web,
        (
            "POST /api/v1/dossiers HTTP/1.1\r\nHost: x\r\n" + scheme + "Content-Length: 0\r\n"
            "Connection: close\r\n\r\n"
        ).encode("utf-8"),
    )
    assert status == 401, payload


async def test_non_utf8_zalo_secrets_and_signatures_are_401(web: Client, no_traces: None) -> None:
    body = b'{"event_name": "message.text.received"}'
    for header in (b"X-Bot-Api-Secret-Token: \xff\xfe\xfd", b"X-Bot-Api-Secret-Token: s\xc3\xa9"):
        request = (
            b"POST /webhooks/zalo/bot HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        )
        status, headers, payload = await raw_http(web, request)
        assert status == 401, payload
        assert headers["content-type"].startswith("application/json")
    stamp = str(now_ms()).encode()
    body = b'{"app_id":"' + APP_ID.encode() + b'","timestamp":"' + stamp + b'"}'
    for header in (b"X-ZEvent-Signature: mac=\xff\xfe", b"X-ZEvent-Signature: \xc3\xa9\xc3\xa9"):
        request = (
            b"POST /webhooks/zalo/oa HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        )
        status, _, payload = await raw_http(web, request)
        assert status == 401, payload


async def test_a_lone_surrogate_in_a_signed_zalo_event_is_400_and_nothing_is_kept(
    web: Client, hardened: Runtime, no_traces: None
) -> None:
    stamp = str(now_ms())
    body = (
        b'{"app_id":"' + APP_ID.encode() + b'","timestamp":"' + stamp.encode() + b'",'
        b'"event_name":"user_send_text","sender":{"id":"1234567"},'
        b'"message":{"msg_id":"m1","text":"T\\ud800t"}}'
    )
    response = await web.post("/webhooks/zalo/oa", data=body, headers=signed(body, stamp))
    error = await json_error(response, 400)  # not 503: Zalo would retry it forever
    assert error["error"] == "invalid_unicode"
    bot_body = (
        b'{"event_name":"message.text.received","message":{"chat":{"id":"9"},"text":"\\udfff"}}'
    )
    bot = await web.post(
        "/webhooks/zalo/bot", data=bot_body, headers={"X-Bot-Api-Secret-Token": BOT_SECRET}
    )
    await json_error(bot, 400)
    async with hardened.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(InboxEvent)) == 0


# ================================================================== dashboard forms
async def login_csrf(web: Client) -> str:
    page = await web.get("/admin/login")
    match = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert match
    return match.group(1)


async def html_error(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "text/html"
    text = await response.text()
    assert "<html" in text.lower() and "Traceback" not in text
    return str(text)


async def test_undecodable_or_malformed_login_forms_get_a_polite_page(
    web: Client, no_traces: None
) -> None:
    csrf = await login_csrf(web)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for body in (
        b"\xff\xfe\xfd",
        f"csrf={csrf}&username=%ff%fe&password=x".encode(),
        b"csrf=" + csrf.encode() + b"&username=a%00b&password=x",
        b"&&&===%%%",
        b"a=" * 500,
    ):
        response = await web.post("/admin/login", data=body, headers=form, allow_redirects=False)
        assert response.status in (400, 403), (body[:40], response.status)
        await html_error(response, response.status)
    multipart = await web.post(
        "/admin/login",
        data=b"--x\r\n\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert 400 <= multipart.status < 500
    odd = await web.post(
        "/admin/login",
        data=f"csrf=kh%C3%B3a-{csrf}&username=a&password=b".encode(),
        headers=form,
        allow_redirects=False,
    )
    await html_error(odd, 403)


async def test_logged_in_pages_survive_odd_queries_and_csrf(
    web: Client, hardened: Runtime, no_traces: None
) -> None:
    await auth.create_user(hardened.sessions, "lan", "mat-khau-dai", "admin")
    csrf = await login_csrf(web)
    ok = await web.post(
        "/admin/login",
        data={"csrf": csrf, "username": "lan", "password": "mat-khau-dai"},
        allow_redirects=False,
    )
    assert ok.status == 303
    for offset in ("9" * 30, "-5", "1e9", "9" * 5000):
        response = await web.get("/admin/audit", params={"offset": offset})
        assert response.status in (200, 400), (offset[:10], response.status)
        assert response.content_type == "text/html"
    for bad in ("kh\xf3a", "x\x00y", ""):
        response = await web.post("/admin/logout", data={"csrf": bad}, allow_redirects=False)
        assert response.status in (400, 403)
        await html_error(response, response.status)
    for target in ("/admin/\r\nSet-Cookie: x=1", "/admin/\x00", "/admin/\nx", "/admin/%0d%0a"):
        response = await web.get("/admin/lang/en", params={"next": target}, allow_redirects=False)
        assert response.status == 303
        location = response.headers["Location"]
        assert "\r" not in location and "\n" not in location and "\x00" not in location
        assert "Set-Cookie: x" not in str(response.headers)


# ================================================================== simulator
async def test_simulator_accepts_any_lang_type_and_refuses_nul(
    web: Client, no_traces: None
) -> None:
    for lang in (5, None, ["vi"], {"a": 1}, True, "en"):
        response = await web.post("/simulator/api/session", json={"lang": lang})
        assert response.status == 200, lang
    session = (await (await web.post("/simulator/api/session", json={})).json())["session"]
    response = await web.post(
        "/simulator/api/send", json={"session": session, "text": "tốt\x00quá"}
    )
    error = await json_error(response, 400)
    assert error["error"] == "nul_character"
    for lang in ("\x00", "x" * 5000):
        page = await web.get("/simulator", params={"lang": lang})
        assert page.status == 200


# ================================================================== NUL on PostgreSQL
async def test_nul_in_codes_is_refused_not_dropped(web: Client, key: str, no_traces: None) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    response = await web.post(
        "/api/v1/dossiers", json={"dossier_code": "HS\x00-1"}, headers=headers
    )
    assert (await json_error(response, 400))["error"] == "nul_character"
    results = await web.post(
        "/api/v1/results",
        json={"results": [{"dossier_code": "HS-2\x00", "official_code": "CB01"}]},
        headers=headers,
    )
    await json_error(results, 400)


async def test_nul_in_a_webhook_comment_is_stripped_and_the_event_kept(
    web: Client, hardened: Runtime, no_traces: None
) -> None:
    """A platform cannot fix its event: the NUL is dropped, the rest of the text is kept."""
    body = json.dumps(
        {
            "event_name": "message.text.received",
            "message": {"message_id": "m-nul", "chat": {"id": "42"}, "text": "xin\x00 chào"},
        }
    ).encode()
    response = await web.post(
        "/webhooks/zalo/bot", data=body, headers={"X-Bot-Api-Secret-Token": BOT_SECRET}
    )
    assert response.status == 200, await response.text()


# ================================================================== below routing
async def test_requests_aiohttp_rejects_get_a_json_400_and_are_logged(
    web: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    long_url = b"GET /healthz?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    control = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Odd: a\x01b\r\nConnection: close\r\n\r\n"
    for request in (long_url, control, b"\x16\x03\x01\x02\x00\r\n\r\n"):
        status, headers, body = await raw_http(web, request)
        assert 400 <= status < 500
        assert headers["content-type"].startswith("application/json"), body
        assert headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert json.loads(body)["error"]
    bad = [r for r in caplog.records if r.exc_info and "access" in r.getMessage().lower()]
    assert not bad
    assert not [r for r in caplog.records if r.name == "aiohttp.access" and r.exc_info]


async def test_405_names_the_allowed_methods(web: Client, no_traces: None) -> None:
    for method, path in (
        ("GET", "/api/v1/dossiers"),
        ("DELETE", "/healthz"),
        ("PUT", "/admin/login"),
    ):
        response = await web.request(method, path)
        assert response.status == 405
        assert response.headers.get("Allow"), path
        if path.startswith("/admin"):
            await html_error(response, 405)  # a page: a polite HTML error
        else:
            assert (await json_error(response, 405))["error"] == "method_not_allowed"


async def test_a_lying_content_length_does_not_hold_the_connection(
    web: Client, no_traces: None
) -> None:
    request = (
        b"POST /simulator/api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"lang":'
    )
    status, _, body = await asyncio.wait_for(raw_http(web, request), timeout=30)
    assert status == 408, body
    assert json.loads(body)["error"] == "body_timeout"
    huge = (
        b"POST /simulator/api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n{}"
    )
    status, _, body = await asyncio.wait_for(raw_http(web, huge), timeout=30)
    assert status == 413, body


# ================================================================== security headers
def assert_secured(response: Any, *, https: bool = False) -> None:
    csp = response.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";", 1)[0]
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.headers.get("Referrer-Policy") == "no-referrer"
    assert ("Strict-Transport-Security" in response.headers) is https


async def test_every_surface_carries_the_security_headers(
    web: Client, key: str, no_traces: None
) -> None:
    token = "A" * 24
    answers = [
        await web.get("/healthz"),
        await web.get("/api/v1/openapi.json"),
        await web.post("/api/v1/dossiers", json={}, headers={"Authorization": f"Bearer {key}"}),
        await web.post("/api/v1/dossiers", json={}),
        await web.get("/simulator"),
        await web.get(f"/simulator?token={token}"),
        await web.get(f"/r/{token}"),
        await web.get(f"/r/{token}/qr.svg"),
        await web.get("/static/simulator.js"),
        await web.get("/admin/login"),
        await web.post("/telegram/webhook", data=b"{}"),
        await web.post("/webhooks/zalo/oa", data=b"{}"),
        await web.get("/no/such/page"),
    ]
    for response in answers:
        assert response.status < 500
        assert_secured(response)


async def test_pages_run_no_inline_script(web: Client) -> None:
    """The CSP forbids inline script, so every page loads its script from a file."""
    for path in ("/simulator", "/simulator?token=" + "A" * 24, "/r/" + "A" * 24, "/admin/login"):
        html = await (await web.get(path)).text()
        inline = re.findall(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", html)
        assert not inline, (path, inline)
        for src in re.findall(r'<script[^>]*src="([^"]+)"', html):
            script = await web.get(src)
            assert script.status == 200, src


async def test_hsts_behind_https(
    tmp_path: Path, database_url: str, keyring: KeyRing, redis_prefix: str
) -> None:
    settings = hardened_settings(
        tmp_path, database_url, redis_prefix, public_base_url="https://danhgia.example.vn"
    )
    rt = await Runtime.create(settings, keyring=keyring)
    try:
        async with TestClient(TestServer(create_app(rt, background=False))) as client:
            for path in ("/healthz", "/simulator", "/admin/login", "/api/v1/openapi.json"):
                response = await client.get(path)
                assert_secured(response, https=True)
                hsts = response.headers["Strict-Transport-Security"]
                assert "max-age=31536000" in hsts
    finally:
        await rt.close()


@pytest.mark.parametrize("trusted", [True, False])
async def test_cookies_secure_and_hsts_behind_a_trusted_tls_proxy(
    tmp_path: Path, database_url: str, keyring: KeyRing, redis_prefix: str, trusted: bool
) -> None:
    """TLS ends at the proxy: its X-Forwarded-Proto / Forwarded say https, believed from it only."""
    settings = hardened_settings(
        tmp_path, database_url, redis_prefix, trusted_proxies="127.0.0.1/32" if trusted else ""
    )
    rt = await Runtime.create(settings, keyring=keyring)
    try:
        async with TestClient(TestServer(create_app(rt, background=False))) as client:
            plain = await client.get("/admin/login")
            assert "Strict-Transport-Security" not in plain.headers
            assert all("Secure" not in c for c in plain.headers.getall("Set-Cookie"))
            for header in (
                {"X-Forwarded-Proto": "https"},
                {"Forwarded": "for=1.2.3.4;proto=https"},
            ):
                response = await client.get("/admin/login", headers=header)
                cookies = response.headers.getall("Set-Cookie")
                assert cookies and all(("; Secure" in c) is trusted for c in cookies), cookies
                assert ("Strict-Transport-Security" in response.headers) is trusted
    finally:
        await rt.close()


async def test_a_telegram_update_with_wrong_types_is_ignored_not_retried(
    web: Client, no_traces: None
) -> None:
    """Found by the fuzzer: a text or button data that is not a string answered 503, so
    Telegram would have redelivered it forever. Now: 200, ignored, nothing stored."""
    chat = {"id": 42, "type": "private"}
    date = int(time.time())
    for update in (
        {"update_id": 7, "message": {"message_id": 1, "date": date, "chat": chat, "text": 5}},
        {"update_id": 8, "message": {"message_id": 1, "date": date, "chat": chat, "text": ["a"]}},
        {
            "update_id": 9,
            "callback_query": {
                "id": "1",
                "from": {"id": 42, "is_bot": False, "first_name": "A"},
                "chat_instance": "1",
                "data": {"a": 1},
            },
        },
    ):
        response = await web.post(
            "/telegram/webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
        )
        assert response.status == 200, await response.text()
        assert (await response.json())["outcome"] == "ignored"


async def test_a_refused_large_body_is_read_before_the_answer(web: Client) -> None:
    """Found by the fuzzer: a 401 sent before a 200 KB body was read reset the connection under
    the client, which then saw no answer at all."""
    body = b"[" * 100_000 + b"]" * 100_000
    request = (
        b"POST /api/v1/results HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: close\r\n\r\n" + body
    )
    status, _, payload = await raw_http(web, request)
    assert status == 401, payload


# ================================================================== de-duplication by event id
async def seen(rt: Runtime) -> int:
    async with rt.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(InboxEvent)) or 0)


async def test_a_zalo_bot_event_resent_with_other_bytes_is_processed_once(
    web: Client, hardened: Runtime, no_traces: None
) -> None:
    headers = {"X-Bot-Api-Secret-Token": BOT_SECRET, "Content-Type": "application/json"}
    message = {"message_id": "9001", "date": now_ms(), "chat": {"id": "77"}, "text": "xin chào"}
    event = {"event_name": "message.text.received", "message": message}
    first = await web.post("/webhooks/zalo/bot", data=json.dumps(event), headers=headers)
    assert first.status == 200 and "duplicate" not in await first.json()
    reordered = json.dumps(
        {"message": dict(reversed(message.items())), "event_name": event["event_name"]}
    )
    for again in (json.dumps(event) + " ", json.dumps(event, indent=2), reordered):
        response = await web.post("/webhooks/zalo/bot", data=again, headers=headers)
        assert (await response.json()).get("duplicate") is True, again
    # Without a message id, the content decides: spacing and key order do not make a new event.
    anonymous = {"event_name": "message.sticker.received", "message": {"chat": {"id": "77"}}}
    assert (await web.post("/webhooks/zalo/bot", json=anonymous, headers=headers)).status == 200
    spaced = json.dumps(
        {"message": {"chat": {"id": "77"}}, "event_name": "message.sticker.received"}, indent=1
    )
    response = await web.post("/webhooks/zalo/bot", data=spaced, headers=headers)
    assert (await response.json()).get("duplicate") is True
    assert await seen(hardened) == 2


async def test_a_zalo_bot_event_older_than_its_window_is_ignored(
    web: Client, hardened: Runtime, no_traces: None
) -> None:
    headers = {"X-Bot-Api-Secret-Token": BOT_SECRET}
    old = now_ms() - 3 * 3600 * 1000
    event = {
        "event_name": "message.text.received",
        "message": {"message_id": "9002", "date": old, "chat": {"id": "78"}, "text": "cũ"},
    }
    response = await web.post("/webhooks/zalo/bot", json=event, headers=headers)
    assert response.status == 200 and (await response.json())["ignored"] == "stale"
    assert await seen(hardened) == 0


async def test_a_signed_zalo_oa_event_resent_with_other_spacing_is_processed_once(
    web: Client, hardened: Runtime, no_traces: None
) -> None:
    stamp = str(now_ms())
    event = {
        "app_id": APP_ID,
        "timestamp": stamp,
        "event_name": "user_send_text",
        "sender": {"id": "1234567"},
        "message": {"msg_id": "m-42", "text": "Tốt"},
    }
    for index, raw in enumerate((json.dumps(event), json.dumps(event, indent=2, sort_keys=True))):
        body = raw.encode()
        response = await web.post("/webhooks/zalo/oa", data=body, headers=signed(body, stamp))
        assert response.status == 200, await response.text()
        assert bool((await response.json()).get("duplicate")) is (index == 1)
    assert await seen(hardened) == 1


async def test_a_zalo_oa_redelivery_on_the_last_rung_of_the_ladder_is_taken_once(
    web: Client, hardened: Runtime, no_traces: None
) -> None:
    """Zalo resends with the original timestamp for ~1 h 51 min: the last try still counts."""
    stamp = str(now_ms() - (30 + 300 + 900 + 1800 + 3600 + 60) * 1000)  # the fifth retry, late
    event = {
        "app_id": APP_ID,
        "timestamp": stamp,
        "event_name": "user_send_text",
        "sender": {"id": "1234567"},
        "message": {"msg_id": "m-ladder", "text": "Tốt"},
    }
    body = json.dumps(event).encode()
    outcomes = []
    for _ in range(2):
        response = await web.post("/webhooks/zalo/oa", data=body, headers=signed(body, stamp))
        assert response.status == 200, await response.text()
        outcomes.append(bool((await response.json()).get("duplicate")))
    assert outcomes == [False, True]
    assert await seen(hardened) == 1


async def test_telegram_refuses_a_month_old_update_and_takes_a_redelivery_once(
    web: Client, no_traces: None
) -> None:
    headers = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}

    def update(update_id: int, date: int) -> dict[str, Any]:
        return {
            "update_id": update_id,
            "message": {
                "message_id": update_id,
                "date": date,
                "chat": {"id": 4242, "type": "private"},
                "from": {"id": 4242, "is_bot": False, "first_name": "A"},
                "text": "/help",
            },
        }

    month_old = int(time.time()) - 30 * 86400
    response = await web.post("/telegram/webhook", json=update(500, month_old), headers=headers)
    assert response.status == 200 and (await response.json())["ignored"] == "stale"
    recent = int(time.time()) - 3600  # redelivered an hour later: inside Telegram's 24 hours
    outcomes = []
    for _ in range(2):
        response = await web.post("/telegram/webhook", json=update(501, recent), headers=headers)
        assert response.status == 200
        outcomes.append((await response.json())["outcome"])
    assert outcomes == ["message", "duplicate"]
