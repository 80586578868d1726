"""Dead letters: what could not be processed or delivered, for a province admin to see and retry.

An inbound event that failed ``SURVEYBOT_INBOX_MAX_ATTEMPTS`` times stays in the inbox, sealed,
as a dead letter: an admin who has fixed the cause (a channel setting, an outage) sends it back
to the queue from here, and the inbox processes it once as if it had just arrived. The page
shows the channel, the hour, the attempts and the reason, never the event's body. Outbound dead
letters are counted only: their address and payload were erased when they died, and their
invitation has already fallen back to another channel or closed (``docs/threat-model.md``).
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
        outbound = await outbox.dead_summary(session, limit=200)
    return _view(
        ctx,
        "dead_letters.html",
        inbound=inbound,
        outbound=outbound,
        retried=ctx.request.query.get("retried", "")[:8],
    )


@page(admin_only=True)
async def retry(ctx: Ctx) -> web.StreamResponse:
    """Send one dead letter (``id``) or every one (``id=all``) back to the inbox's queue."""
    form = await read_form(ctx.request)
    wanted = str(form.get("id", ""))[:32]
    async with ctx.services.sessions() as session:
        dead = await inbox.dead_letters(session, limit=10_000)
        chosen = dead if wanted == "all" else [d for d in dead if d.id == wanted]
        if not chosen:
            # Already retried (by another admin, or a second click) or never dead: say so.
            return error_page(ctx.request, ctx.lang, 404, "dead_letter_gone")
        requeued = [d for d in chosen if await inbox.requeue(session, d.id)]
    await ctx.services.audit.record(
        ctx.actor,
        "dead_letter.retry",
        {"count": len(requeued), "channels": sorted({d.channel for d in requeued})},
    )
    return redirect(f"{PATH}?retried={len(requeued)}")


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, dead_letters_page, name="admin_dead_letters")
    app.router.add_post(f"{PATH}/retry", retry, name="admin_dead_letters_retry")
