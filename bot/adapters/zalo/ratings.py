"""ZNS ratings and delivery receipts become survey data; a reconciliation job catches lost ones.

Why both paths: Zalo's ``user_feedback`` webhook can be lost (a 2xx that never came, retries that
gave up), so ``reconcile`` polls ``rating/get`` for the recent window. Both paths end in
``record_rating``, idempotent by our random ``tracking_id`` (its row is deleted when the survey
closes), so a rating seen twice is stored once. A citizen may rate one tracking id again (change
their stars; Zalo's docs say nothing of it, so the emulator assumes it can): the FIRST rating we
learn of is the invitation's response, later ones find the survey closed and are ignored. So that
both paths agree on "first", reconciliation takes ``rating/get``'s rows oldest first by their
submit time (the list's order is not documented). The stars become the ``zns-5-star`` survey's
``stars`` answer (its 1..5 satisfaction), chips map onto that survey's criteria values, and the
note is scrubbed of phone numbers, ids and codes before it is stored.
"""

from __future__ import annotations

import logging
import unicodedata

from bot.adapters.zalo.http import ZaloTransportError
from bot.adapters.zalo.suite import ZaloSuite
from bot.adapters.zalo.tokens import TokenUnavailable
from bot.adapters.zalo.zns import SURVEY as ZNS_SURVEY
from bot.adapters.zalo.zns import Rating, RatingsUnavailable, ZnsChannel
from bot.flows.definition import SurveyDefinition
from bot.flows.engine import AnswerEvent
from bot.flows.scrub import scrub
from bot.inbound import TrackedRatings

log = logging.getLogger(__name__)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.casefold().replace("đ", "d"))
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def rating_answers(
    definition: SurveyDefinition, rating: Rating, max_text: int
) -> list[AnswerEvent]:
    """The rating as answers of ``zns-5-star``: unknown chips are dropped, never stored raw."""
    questions = {q.id: q for q in definition.questions}
    answers: list[AnswerEvent] = []
    stars = questions["stars"]
    option = next(o for o in stars.options if o.value == str(rating.rate))
    answers.append(
        AnswerEvent(
            "stars",
            option.value,
            option.points,
            None,
            option.label.vi,
            stars.criterion,
            option.satisfaction,
        )
    )
    if "chips" in questions and rating.feedbacks:
        chips = questions["chips"]
        by_label: dict[str, str] = {}
        for o in chips.options:
            by_label[_fold(o.value)] = o.value
            by_label[_fold(o.label.vi)] = o.value
            if o.label.en:
                by_label[_fold(o.label.en)] = o.value
        values = sorted({by_label[_fold(f)] for f in rating.feedbacks if _fold(f) in by_label})
        if values:
            answers.append(
                AnswerEvent("chips", values, None, None, ", ".join(values), chips.criterion)
            )
    note = scrub(rating.note.strip())[:max_text]
    if "note" in questions and note:
        answers.append(AnswerEvent("note", None, None, note, note))
    return answers


async def record_rating(tracked: TrackedRatings, rating: Rating, max_text: int = 1000) -> bool:
    """Store one rating as a completed response; False when unknown or already stored."""
    return await tracked.record_rating(
        ZnsChannel.name,
        rating.tracking_id,
        f"zns:{rating.tracking_id}",
        lambda definition: rating_answers(definition, rating, max_text),
    )


async def record_delivery(tracked: TrackedRatings, tracking_id: str) -> bool:
    """Zalo's ZNS delivery receipt: the ledger records that the template reached the phone."""
    return await tracked.record_receipt(tracking_id)


async def reconcile(suite: ZaloSuite | None, tracked: TrackedRatings) -> int:
    """Poll ``rating/get`` over the recent window; store what the webhook missed. Returns how
    many ratings were newly stored. (Old tracking and webhook-dedup rows are forgotten by
    ``storage.retention``, in the maintenance loop.)"""
    if suite is None or suite.zns is None:
        return 0
    now_s = suite.now()
    hours = suite.settings.zalo_zns_reconcile_hours
    try:
        ratings = await suite.zns.fetch_ratings(
            int((now_s - hours * 3600) * 1000), int(now_s * 1000)
        )
    except (RatingsUnavailable, TokenUnavailable, ZaloTransportError) as exc:
        # Bounded: at most MAX_REFRESHES_PER_RUN refreshes, then this run stops; the next
        # maintenance round tries again over the same window, so nothing is lost.
        log.warning("zns reconciliation stopped for this round: %s", exc)
        return 0
    stored = 0
    # Oldest first (a stable sort keeps Zalo's order for equal times): a re-rated tracking id
    # keeps its first rating, as on the webhook path.
    for rating in sorted(ratings, key=lambda r: r.submit_ms):
        stored += await record_rating(tracked, rating, suite.settings.max_free_text_chars)
    if stored:
        log.info("zns reconciliation stored %d rating(s) the webhook missed", stored)
    return stored


__all__ = ["ZNS_SURVEY", "rating_answers", "reconcile", "record_delivery", "record_rating"]
