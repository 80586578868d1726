"""Survey templates managed in the dashboard: upload, preview, publish as a new version.

An admin uploads a YAML definition; it is validated with every problem named (the same parser
as the files), and must be a new version: the next one of an existing survey (versions already
used are never replaced: invitations begun on them keep running on them), or version 1 of a new
survey. A valid upload becomes a draft, previewed in the simulator through an unguessable token
before anything uses it. Publishing stores it in ``survey_version`` (the table the catalog is
built from at start), so every process learns it: at once in the process that published it,
within ``SURVEYBOT_SURVEY_REFRESH_SECONDS`` in the others (``refresh``). Old versions are kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bot.flows.definition import SurveyCatalog, SurveyDefinition, parse_definition
from storage.db import Sessions
from storage.models import SurveyDraft, SurveyVersion, utcnow

#: How long a draft's preview link works after it was made.
DRAFT_HOURS = 72
MAX_DEFINITION_CHARS = 200_000


class DraftRefused(ValueError):
    """An upload or a publication that cannot be taken; the message names every reason."""


@dataclass(frozen=True, slots=True)
class Draft:
    id: str
    survey_id: str
    version: int
    uploaded_by: str
    uploaded_at: dt.datetime
    published_at: dt.datetime | None
    definition: SurveyDefinition


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _version_problem(catalog: SurveyCatalog, definition: SurveyDefinition) -> str | None:
    if definition.id not in catalog:
        return None if definition.version == 1 else (
            f"{definition.id} is a new survey: its first version is 1, not {definition.version}"
        )  # fmt: skip
    latest = catalog.latest(definition.id).version
    if definition.version != latest + 1:
        return (
            f"{definition.id} v{latest} is the latest published version: "
            f"the new one must be version {latest + 1}, not {definition.version}"
        )
    return None


async def upload(sessions: Sessions, catalog: SurveyCatalog, text: str, uploaded_by: str) -> Draft:
    """Validate and keep a draft (its preview link is made on demand: ``preview_token``)."""
    if not text.strip():
        raise DraftRefused("the definition is empty")
    if len(text) > MAX_DEFINITION_CHARS:
        raise DraftRefused(f"a definition is at most {MAX_DEFINITION_CHARS} characters")
    await refresh(sessions, catalog)  # another process may have published since
    definition = parse_definition(text, "uploaded definition")  # SurveyDefinitionError
    problem = _version_problem(catalog, definition)
    if problem:
        raise DraftRefused(problem)
    row = SurveyDraft(
        token_hash=_digest(secrets.token_urlsafe(24)),
        survey_id=definition.id,
        version=definition.version,
        definition=text,
        uploaded_by=uploaded_by[:64],
    )
    async with sessions() as session:
        session.add(row)
        await session.commit()
        await session.refresh(row)
    return _draft(row, definition)


def _draft(row: SurveyDraft, definition: SurveyDefinition | None = None) -> Draft:
    return Draft(
        row.id,
        row.survey_id,
        row.version,
        row.uploaded_by,
        row.uploaded_at,
        row.published_at,
        definition or parse_definition(row.definition, f"draft {row.id}"),
    )


async def get(sessions: Sessions, draft_id: str) -> Draft | None:
    async with sessions() as session:
        row = await session.get(SurveyDraft, draft_id[:32])
    return None if row is None else _draft(row)


async def preview_token(sessions: Sessions, draft_id: str) -> str | None:
    """A fresh preview link's token for an unpublished draft (the previous one stops working):
    made when an admin asks, so no long-lived link sits in a page or a history."""
    token = secrets.token_urlsafe(24)
    async with sessions() as session:
        result = await session.execute(
            update(SurveyDraft)
            .where(SurveyDraft.id == draft_id[:32], SurveyDraft.published_at.is_(None))
            .values(token_hash=_digest(token), token_issued_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        await session.commit()
    return token if result.rowcount else None  # type: ignore[attr-defined]


async def by_token(sessions: Sessions, token: str, now: dt.datetime | None = None) -> str | None:
    """The YAML of an unpublished draft whose preview token this is, while the link works."""
    since = (now or utcnow()) - dt.timedelta(hours=DRAFT_HOURS)
    async with sessions() as session:
        return await session.scalar(
            select(SurveyDraft.definition).where(
                SurveyDraft.token_hash == _digest(token),
                SurveyDraft.published_at.is_(None),
                SurveyDraft.token_issued_at >= since,
            )
        )


async def recent(sessions: Sessions, limit: int = 50) -> list[Draft]:
    async with sessions() as session:
        rows = await session.execute(
            select(SurveyDraft).order_by(SurveyDraft.uploaded_at.desc()).limit(limit)
        )
        return [_draft(row) for row in rows.scalars()]


async def publish(sessions: Sessions, catalog: SurveyCatalog, draft_id: str) -> SurveyDefinition:
    """The draft becomes its survey's newest version, for every invitation from now on.

    Refused when it was published already, or when its version was taken meanwhile (two admins
    publishing version N at once: the version table's key lets one through)."""
    await refresh(sessions, catalog)
    async with sessions() as session:
        row = await session.get(SurveyDraft, draft_id[:32])
        if row is None:
            raise DraftRefused("no such draft")
        if row.published_at is not None:
            raise DraftRefused(f"{row.survey_id} v{row.version} was already published")
        definition = parse_definition(row.definition, f"draft {row.id}")
        problem = _version_problem(catalog, definition)
        if problem:
            raise DraftRefused(problem)
        try:
            claimed = await session.execute(
                update(SurveyDraft)
                .where(SurveyDraft.id == row.id, SurveyDraft.published_at.is_(None))
                .values(published_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if not claimed.rowcount:  # type: ignore[attr-defined]
                raise DraftRefused(f"{row.survey_id} v{row.version} was already published")
            session.add(
                SurveyVersion(
                    survey_id=definition.id,
                    version=definition.version,
                    definition=row.definition,
                    source=f"dashboard: {row.uploaded_by}"[:255],
                )
            )
            await session.commit()
        except IntegrityError:
            raise DraftRefused(
                f"{definition.id} v{definition.version} was published meanwhile by someone else"
            ) from None
    catalog.add(definition)
    return definition


async def refresh(sessions: Sessions, catalog: SurveyCatalog) -> int:
    """Learn the versions other processes published since this one started; how many.

    Reads only the keys, then the text of the versions this process lacks (usually none)."""
    known = {(d.id, d.version) for d in catalog.all()}
    async with sessions() as session:
        keys = (await session.execute(select(SurveyVersion.survey_id, SurveyVersion.version))).all()
        missing = [(sid, version) for sid, version in keys if (sid, version) not in known]
        added = 0
        for survey_id, version in missing:
            text = await session.scalar(
                select(SurveyVersion.definition).where(
                    SurveyVersion.survey_id == survey_id, SurveyVersion.version == version
                )
            )
            if text is not None:
                where = f"survey_version {survey_id} v{version}"
                added += catalog.add(parse_definition(text, where))
    return added
