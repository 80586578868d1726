"""/delete leaves no trace on Telegram: PTB against the Bot API emulator, webhook mode, real Redis.

The scenario of ``test_erasure`` (one survey completed with a comment, one half answered, one
dossier bound and waiting), played by a Telegram citizen. Telegram adds per-chat state in Redis
(the question message notes, the chat's send window), keyed by the contact pseudonym: after the
erasure no key or value may hold it, nor the chat id, nor any answer.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from bot.adapters.telegram.channel import TelegramChannel
from bot.emulators.telegram import ChatMessage, TelegramEmulator
from bot.runtime import Runtime
from storage.models import Response
from tests import test_telegram_channel as tg
from tests.helpers import assert_absent, dump_database, dump_redis
from tests.test_erasure import ANSWERS, COMMENT, traces

# The Telegram scenario's fixtures: the emulator, the app pointed at it, webhook mode.
emulator_options = tg.emulator_options
telegram_overrides = tg.telegram_overrides
emulator = tg.emulator
runtime = tg.runtime
telegram_channel = tg.telegram_channel
dispatching = tg.dispatching
hooked = tg.hooked
agency_api = tg.agency_api


async def test_delete_leaves_no_trace_of_the_citizen_on_telegram(
    emulator: TelegramEmulator,
    hooked: TelegramChannel,
    agency_api: tg.Agency,
    runtime: Runtime,
    redis_prefix: str,
) -> None:
    uid = emulator.new_user_id()
    await tg.start_citizen(emulator, uid, (await agency_api.register("HS-TE-A"))["rating_token"])
    await agency_api.report("HS-TE-A")
    await tg.answer_survey(emulator, uid, typed={"comment": COMMENT})

    # A second dossier opened in the same chat, its survey half answered.
    shown = len(emulator.bot_messages_for(uid))
    await emulator.open_deep_link(uid, (await agency_api.register("HS-TE-B"))["rating_token"])
    await emulator.wait_for_bot_messages(uid, shown + 1)
    await agency_api.report("HS-TE-B")
    await emulator.wait_until(lambda: tg.live_question(emulator, uid, set()) is not None, 10)
    question = tg.live_question(emulator, uid, set())
    assert question is not None
    await emulator.tap_button(uid, question.message_id, question.buttons[0][1] or "")
    await emulator.wait_until(lambda: not question.buttons and question.edited, 10)
    await emulator.wait_until(
        lambda: tg.live_question(emulator, uid, {question.message_id}) is not None, 10
    )  # the next question is out
    # A third bound at reception, its result not back yet.
    shown = len(emulator.bot_messages_for(uid))
    await emulator.open_deep_link(uid, (await agency_api.register("HS-TE-C"))["rating_token"])
    await emulator.wait_for_bot_messages(uid, shown + 1)
    await tg.settled(runtime)

    async with runtime.sessions() as session:
        response_ids = list((await session.execute(select(Response.id))).scalars())
    assert len(response_ids) == 2
    identifiers = {
        **traces(runtime, "telegram", str(uid)),
        **{f"response id {n}": rid for n, rid in enumerate(response_ids)},
        **ANSWERS,
    }
    contact = identifiers["contact pseudonym 0"]
    before = await dump_redis(redis_prefix)
    assert f"{redis_prefix}tg:" in before and contact in before  # the chat's state is in Redis
    assert contact in await dump_database(runtime)

    def confirmation() -> ChatMessage | None:
        last = emulator.bot_messages_for(uid)[-1]
        return last if ("Có, xoá", "cmd:delete:yes") in last.buttons else None

    await emulator.send_text(uid, "/delete")
    await emulator.wait_until(lambda: confirmation() is not None, 10)
    confirm = confirmation()
    assert confirm is not None
    await emulator.tap_button(uid, confirm.message_id, "cmd:delete:yes")
    await emulator.wait_until(lambda: tg.texts(emulator, uid)[-1] == "Đã xoá 2 phiếu trả lời.")
    await emulator.wait_until(lambda: not confirm.buttons)  # the confirmation is spent
    await emulator.wait_idle()
    await tg.settled(runtime)  # the reply is marked sent only after its chat state went

    redis_dump = await dump_redis(redis_prefix)
    assert_absent(identifiers, {"database": await dump_database(runtime), "redis": redis_dump})
    assert json.dumps(uid) not in redis_dump
