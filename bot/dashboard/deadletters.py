"""Dead letters: what could not be processed or delivered, for a province admin to see and retry.

Inbound: an event that failed ``SURVEYBOT_INBOX_MAX_ATTEMPTS`` times stays in the inbox, sealed.
Outbound: a survey message whose retries ran out on passing failures (an outage), with nowhere
to fall back to, stalls, sealed, while its survey stays open. Once an admin has fixed the cause
(a channel setting, an outage over), a retry sends them back to their queue, one or all, and they
are processed or sent once, as if they had just arrived. The page shows the channel, the hour,
the attempts and the reason, never a body, an address or a payload. Messages refused for good
(a blocked bot) are only counted: their address and payload were erased when they died, and
their survey has already fallen back to another channel or closed (``docs/threat-model.md``).
Every retry is audited.
"""

from __future__ import annotations

from aiohttp import web

from bot.body import read_form
from bot.dashboard.views import PREFIX, Ctx, _view, error_page, page, redirect
from storage import inbox, outbox

PATH = f"{PREFIX}/dead-letters"


@page(admin_only=True)
async def dead_letters_page(ctx: Ctx) -> web.StreamResponse:
    async with ctx.services.sessions() as session:
        inbound = await inbox.dead_letters(session, limit=200)
        stalled = await outbox.stalled(session, limit=200)
        refused = await outbox.dead_summary(session, limit=200)
    return _view(
        ctx,
        "dead_letters.html",
        inbound=inbound,
        stalled=stalled,
        refused=refused,
        retried=ctx.request.query.get("retried", "")[:8],
    )


@page(admin_only=True)
async def retry(ctx: Ctx) -> web.StreamResponse:
    """Send one dead letter (``id``) or every one (``id=all``) of a ``queue`` (``inbox`` or
    ``outbox``) back to be processed or sent."""
    form = await read_form(ctx.request)
    queue = str(form.get("queue", ""))
    wanted = str(form.get("id", ""))[:32]
    if queue not in ("inbox", "outbox") or not wanted:
        return error_page(ctx.request, ctx.lang, 400, "bad_request")
    channels: set[str] = set()
    async with ctx.services.sessions() as session:
        if queue == "inbox":
            requeued = await inbox.requeue(session, None if wanted == "all" else [wanted])
            count, channels = len(requeued), set(requeued)
        else:
            waiting = await outbox.stalled(session, limit=10_000)
            chosen_ids = None if wanted == "all" else [wanted]
            channels = {m.channel for m in waiting if chosen_ids is None or m.id == wanted}
            count = await outbox.retry_stalled(session, chosen_ids)
            await session.commit()
    if not count:
        # Already retried (by another admin, or a second click), or its survey closed: say so.
        return error_page(ctx.request, ctx.lang, 404, "dead_letter_gone")
    await ctx.services.audit.record(
        ctx.actor,
        "dead_letter.retry",
        {"queue": queue, "count": count, "channels": sorted(channels)},
    )
    return redirect(f"{PATH}?retried={count}")


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, dead_letters_page, name="admin_dead_letters")
    app.router.add_post(f"{PATH}/retry", retry, name="admin_dead_letters_retry")
