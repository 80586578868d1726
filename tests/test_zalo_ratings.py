"""A ZNS rating given twice for one tracking id (the citizen changed their stars).

Why: Zalo's docs say nothing of a second rating (../shared/reference/zalo.md §4.2), so the
emulator assumes it can happen: a second ``user_feedback`` and a second ``rating/get`` row. Our
service must still store exactly one response per invitation, the first rating it learns of
(``bot/adapters/zalo/ratings.py``), whether the ratings come by webhook or by reconciliation, and
whatever order ``rating/get`` lists them in (not documented either).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.adapters.zalo.ratings import reconcile
from storage.models import Response
from storage.pseudonym import KeyRing
from tests.test_zalo_channels import Zalo, zalo_stack


async def responses(zalo: Zalo) -> int:
    async with zalo.rt.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Response)) or 0)


@pytest.mark.parametrize("order", ["oldest_first", "newest_first"])
@pytest.mark.parametrize("path", ["webhook", "reconciliation"])
async def test_a_rating_changed_later_is_stored_once_as_first_given(
    tmp_path: Path, database_url: str, keyring: KeyRing, redis_prefix: str, path: str, order: str
) -> None:
    async with zalo_stack(
        tmp_path, database_url, keyring, redis_prefix, rating_get_order=order
    ) as zalo:
        emu = zalo.emu
        await zalo.report({"dossier_code": "000.00.12.H29-261124-0901", "phone": "0912345678"})
        await zalo.settle()
        [sent] = emu.zns_sent_to("84912345678")
        if path == "reconciliation":  # Zalo loses both webhooks
            emu.drop_next_webhook(count=2, event_name="user_feedback")

        await emu.zns_rate(sent.msg_id, 2, ["Cán bộ nhiệt tình"])
        await zalo.settle()
        emu.advance(600)  # ten minutes later the citizen changes their mind
        await emu.zns_rate(sent.msg_id, 5)
        await zalo.settle()

        feedback = emu.webhooks_named("user_feedback")
        assert [json_rate(w.event) for w in feedback] == [2, 5]  # a second user_feedback
        assert [r.rate for r in emu.zns_ratings if r.tracking_id == sent.tracking_id] == [2, 5]
        if path == "webhook":
            assert all(w.delivered and w.statuses[-1] == 200 for w in feedback)
            assert await responses(zalo) == 1
            assert await reconcile(zalo.rt.zalo, zalo.rt.service) == 0
        else:
            assert all(w.dropped for w in feedback) and await responses(zalo) == 0
            assert await reconcile(zalo.rt.zalo, zalo.rt.service) == 1
            assert await reconcile(zalo.rt.zalo, zalo.rt.service) == 0
        [listed] = [c for c in emu.calls_to("/rating/get") if c.error == 0][-1:]
        assert listed.response["data"]["total"] == 2  # both ratings were in rating/get

        assert await responses(zalo) == 1  # one response for the one invitation
        [row] = await zalo.export_rows()
        assert (row["survey"], row["q_stars"], row["q_chips"]) == ("zns-5-star", "2", "attitude")


def json_rate(event: dict[str, object]) -> object:
    message = event.get("message")
    return message.get("rate") if isinstance(message, dict) else None
