"""Pseudonyms are namespaced by channel (issue 10, item 6): the same raw id on two channels is
two citizens, and what was stored before namespacing (a bare id's pseudonym) keeps matching."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select, update

from bot.channels import Capabilities, OutboundMessage
from bot.flows.engine import Reply
from bot.inbound import route_button, route_text
from bot.runtime import Runtime
from bot.schemas import DossierRegistration, ResultBatch, ResultReport
from storage.models import (
    Agency,
    Dossier,
    DossierContact,
    Invitation,
    OptOut,
    OutboxMessage,
    Response,
)
from tests.conftest import today
from tests.helpers import dump_database

RAW_ID = "1234567890"


class Stub:
    """A chat channel that records what each address received."""

    capabilities = Capabilities(buttons=False, max_text_chars=4096)

    def __init__(self, name: str) -> None:
        self.name = name
        self.received: dict[str, list[str]] = defaultdict(list)

    async def send(self, address: str, message: OutboundMessage) -> None:
        self.received[address].append(message.text)


def install(runtime: Runtime, *names: str) -> dict[str, Stub]:
    stubs = {name: Stub(name) for name in names}
    runtime.channels.update(stubs)
    runtime.service.capabilities = {
        **runtime.service.capabilities,
        **{name: stub.capabilities for name, stub in stubs.items()},
    }
    return stubs


async def bind(runtime: Runtime, agency: Agency, code: str, channel: str, address: str) -> None:
    reg = await runtime.service.register_dossier(agency, DossierRegistration(dossier_code=code))
    await runtime.service.bind(reg.rating_token, channel, address, "vi")


async def report(runtime: Runtime, agency: Agency, code: str) -> str | None:
    outcome = await runtime.service.report_results(
        agency, ResultBatch(results=[ResultReport(dossier_code=code, returned_at=today())])
    )
    await runtime.dispatcher.drain()
    return outcome.items[0].survey_status


async def responses(runtime: Runtime) -> list[str]:
    async with runtime.sessions() as session:
        return list((await session.execute(select(Response.channel))).scalars())


async def test_the_same_id_on_two_channels_is_two_citizens(
    runtime: Runtime, agency: Agency
) -> None:
    stubs = install(runtime, "telegram", "zalo_bot")
    telegram, zalo = stubs["telegram"].received, stubs["zalo_bot"].received
    await bind(runtime, agency, "HS-N-1", "telegram", RAW_ID)
    await bind(runtime, agency, "HS-N-2", "zalo_bot", RAW_ID)
    assert await report(runtime, agency, "HS-N-1") == "sent"
    assert telegram[RAW_ID][-1].startswith("Để hoàn thiện hồ sơ")  # the first question

    # The Zalo user with the same id has no survey open, and cannot answer the Telegram one.
    await runtime.service.handle("zalo_bot", RAW_ID, Reply("1"))
    await runtime.dispatcher.drain()
    assert "không có phiếu" in zalo[RAW_ID][-1]
    assert await responses(runtime) == []
    # Their /stop does not stop the Telegram citizen, and is honoured for their own dossier.
    await route_text(runtime.service, "zalo_bot", RAW_ID, "/stop")
    assert await report(runtime, agency, "HS-N-2") == "opted_out"
    await runtime.service.handle("telegram", RAW_ID, Reply("1"))
    await runtime.dispatcher.drain()
    assert telegram[RAW_ID][-1].startswith("Ông/Bà đã phải liên hệ với bao nhiêu cơ quan")
    assert await responses(runtime) == ["telegram"]
    # Nor does their /delete erase the Telegram citizen's answers.
    await route_button(runtime.service, "zalo_bot", RAW_ID, "cmd:delete:yes")
    await runtime.dispatcher.drain()
    assert zalo[RAW_ID][-1] == "Đã xoá 0 phiếu trả lời."
    assert await responses(runtime) == ["telegram"]

    keys = runtime.keyring
    async with runtime.sessions() as session:
        [stored] = (await session.execute(select(Invitation.contact_hash))).scalars().all()
        [opted_out] = (await session.execute(select(OptOut.contact_hash))).scalars().all()
    assert stored == keys.channel_pseudonym("contact", "telegram", RAW_ID).digest
    assert opted_out == keys.channel_pseudonym("contact", "zalo_bot", RAW_ID).digest
    assert keys.pseudonym("contact", RAW_ID).digest not in await dump_database(runtime)


async def as_before_namespacing(runtime: Runtime, channel: str, address: str) -> None:
    """Rewrite this chat's stored pseudonyms to the bare-id form written before namespacing."""
    new = runtime.keyring.channel_pseudonym("contact", channel, address).digest
    legacy = runtime.keyring.pseudonym("contact", address).digest
    async with runtime.sessions() as session:
        for model in (Dossier, DossierContact, Invitation):
            await session.execute(
                update(model).where(model.contact_hash == new).values(contact_hash=legacy)
            )
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.conversation == new)
            .values(conversation=legacy)
        )
        await session.commit()


async def test_records_stored_under_the_legacy_pseudonym_keep_matching(
    runtime: Runtime, agency: Agency
) -> None:
    keys = runtime.keyring
    web = runtime.web
    # A survey opened before namespacing, and the answers of an earlier survey of that chat.
    rater = await web.open_session()
    await bind(runtime, agency, "HS-L-1", "web", rater)
    assert await report(runtime, agency, "HS-L-1") == "sent"
    await as_before_namespacing(runtime, "web", rater)
    legacy_rater = keys.pseudonym("rater", rater)
    async with runtime.sessions() as session:
        session.add(Response(agency_id=agency.id, survey_id="hanoi-4", survey_version=1,
                             channel="web", language="vi", answered_on=today(),
                             rater_hash=legacy_rater.digest,
                             rater_key_id=legacy_rater.key_id))  # fmt: skip
        await session.commit()
    await runtime.service.handle("web", rater, Reply("1"))  # still their open survey
    await runtime.dispatcher.drain()
    assert (await web.poll(rater, 0))[-1]["text"].startswith("Ông/Bà đã phải liên hệ với bao nhiêu")
    assert len(await responses(runtime)) == 2

    # A chat that said /stop before namespacing, and a dossier it bound back then.
    stopped = await web.open_session()
    await bind(runtime, agency, "HS-L-2", "web", stopped)
    await as_before_namespacing(runtime, "web", stopped)
    async with runtime.sessions() as session:
        session.add(OptOut(contact_hash=keys.pseudonym("contact", stopped).digest,
                           key_id=keys.known_key_ids("contact")[0], created_on=today()))  # fmt: skip
        await session.commit()
    assert await report(runtime, agency, "HS-L-2") == "opted_out"
    # A dossier bound before namespacing whose chat says /stop now.
    late = await web.open_session()
    await bind(runtime, agency, "HS-L-3", "web", late)
    await as_before_namespacing(runtime, "web", late)
    await route_text(runtime.service, "web", late, "/stop")
    assert await report(runtime, agency, "HS-L-3") == "opted_out"

    # /delete finds both responses, the one under the legacy rater pseudonym too.
    await route_button(runtime.service, "web", rater, "cmd:delete:yes")
    await runtime.dispatcher.drain()
    assert (await web.poll(rater, 0))[-1]["text"] == "Đã xoá 2 phiếu trả lời."
    database = await dump_database(runtime)
    assert legacy_rater.digest not in database
    assert keys.pseudonym("contact", rater).digest not in database
    async with runtime.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Response)) == 0
