"""Survey templates: a province admin uploads a YAML definition, sees every problem named, tries
it in the simulator, and publishes it as its survey's next version (``storage.survey_drafts``).

Versions already used are never changed: invitations begun on one finish on it. Every upload,
preview link and publication is audited.
"""

from __future__ import annotations

from aiohttp import web

from bot.body import read_form
from bot.dashboard.views import PREFIX, Ctx, _view, error_page, page, redirect, render
from bot.flows.definition import SurveyDefinitionError
from bot.i18n import gettext
from storage import survey_drafts

PATH = f"{PREFIX}/surveys"


def _versions(ctx: Ctx) -> list[tuple[str, list[int], str]]:
    """Each survey: its versions, newest first, and its latest title in the reader's language."""
    catalog = ctx.services.catalog
    listed = []
    for survey_id in catalog.ids():
        versions = sorted((d.version for d in catalog.all() if d.id == survey_id), reverse=True)
        listed.append((survey_id, versions, catalog.latest(survey_id).title.get(ctx.lang)))
    return listed


async def _list(
    ctx: Ctx, *, status: int = 200, problems: list[str] | None = None, text: str = ""
) -> web.Response:
    await survey_drafts.refresh(ctx.services.sessions, ctx.services.catalog)
    response = _view(
        ctx,
        "surveys.html",
        surveys=_versions(ctx),
        drafts=await survey_drafts.recent(ctx.services.sessions),
        problems=problems or [],
        text=text,
        published=ctx.request.query.get("published", "")[:80],
    )
    response.set_status(status)
    return response


@page(admin_only=True)
async def surveys_page(ctx: Ctx) -> web.StreamResponse:
    return await _list(ctx)


@page(admin_only=True)
async def upload(ctx: Ctx) -> web.StreamResponse:
    """A refused upload comes back on the same page with its text, every problem named."""
    text = str((await read_form(ctx.request)).get("definition", ""))
    try:
        draft = await survey_drafts.upload(
            ctx.services.sessions, ctx.services.catalog, text, ctx.user.username
        )
    except SurveyDefinitionError as exc:
        lines = str(exc).splitlines()
        return await _list(ctx, status=422, problems=lines[1:] or lines, text=text)
    except survey_drafts.DraftRefused as exc:
        return await _list(ctx, status=422, problems=[str(exc)], text=text)
    await ctx.services.audit.record(
        ctx.actor, "survey.upload", {"survey": draft.survey_id, "version": draft.version}
    )
    return redirect(f"{PATH}/drafts/{draft.id}")


@page(admin_only=True)
async def draft_page(ctx: Ctx) -> web.StreamResponse:
    draft = await survey_drafts.get(ctx.services.sessions, ctx.request.match_info["draft"])
    if draft is None:
        return error_page(ctx.request, ctx.lang, 404, "not_found")
    catalog = ctx.services.catalog
    current = catalog.latest(draft.survey_id) if draft.survey_id in catalog else None
    return _view(ctx, "survey_draft.html", draft=draft, current=current)


@page(admin_only=True)
async def preview(ctx: Ctx) -> web.StreamResponse:
    """A fresh preview link, then straight to the simulator running the draft."""
    draft_id = ctx.request.match_info["draft"]
    token = await survey_drafts.preview_token(ctx.services.sessions, draft_id)
    if token is None:
        return error_page(ctx.request, ctx.lang, 404, "not_found")
    await ctx.services.audit.record(ctx.actor, "survey.preview", {"draft": draft_id[:32]})
    return redirect(f"/simulator?draft={token}&lang={ctx.lang}")


@page(admin_only=True)
async def publish(ctx: Ctx) -> web.StreamResponse:
    draft_id = ctx.request.match_info["draft"]
    try:
        definition = await survey_drafts.publish(
            ctx.services.sessions, ctx.services.catalog, draft_id
        )
    except survey_drafts.DraftRefused as exc:
        # The storage's reason is technical English (shared with the tests): framed in the reader's.
        message = gettext(
            ctx.lang, "The survey could not be published ({reason}).", reason=str(exc)
        )
        return render(ctx.request, "error.html", ctx.lang, status=409, message=message, ctx=None)
    await ctx.services.audit.record(
        ctx.actor, "survey.publish", {"survey": definition.id, "version": definition.version}
    )
    return redirect(f"{PATH}?published={definition.id}+v{definition.version}")


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, surveys_page, name="admin_surveys")
    app.router.add_post(f"{PATH}/upload", upload, name="admin_surveys_upload")
    app.router.add_get(f"{PATH}/drafts/{{draft}}", draft_page, name="admin_survey_draft")
    app.router.add_post(f"{PATH}/drafts/{{draft}}/preview", preview, name="admin_survey_preview")
    app.router.add_post(f"{PATH}/drafts/{{draft}}/publish", publish, name="admin_survey_publish")
