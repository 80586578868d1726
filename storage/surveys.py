"""Survey versions kept in the database, so that every version anything refers to stays known.

Definitions come from the package and from the deployment's surveys folder; each version is
written to ``survey_version`` the first time a process starts with it, before any invitation
can use it. The catalog is that table plus the files: an invitation begun on version N keeps
running on N after N+1 appears and after N's file is removed, and a stored version's content
can never change under the invitations and responses that use it (a changed file with the same
version is refused at start, named, like any invalid file).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bot.flows.definition import (
    DefinitionSource,
    SurveyCatalog,
    SurveyDefinitionError,
    file_sources,
    parse_definition,
    same_definition,
)
from storage.db import Sessions
from storage.models import SurveyVersion


async def load_catalog(sessions: Sessions, folder: Path | None = None) -> SurveyCatalog:
    """The package's, the folder's and every stored version; new file versions are stored.

    Raises ``SurveyDefinitionError`` naming every invalid file, every clash between two files
    and every file that changed a stored version.
    """
    files = file_sources(folder)
    for attempt in range(2):
        try:
            return await _sync(sessions, files)
        except IntegrityError:
            # Another process stored the same new version first: read it back and compare.
            if attempt:
                raise
    raise AssertionError("unreachable")


async def _sync(sessions: Sessions, files: list[DefinitionSource]) -> SurveyCatalog:
    problems: list[str] = []
    async with sessions() as session:
        stored = {
            (row.survey_id, row.version): row
            for row in (await session.execute(select(SurveyVersion))).scalars()
        }
        kept: dict[tuple[str, int], DefinitionSource] = {}
        for key, row in stored.items():
            where = f"database survey_version {key[0]} v{key[1]}"
            try:
                kept[key] = DefinitionSource(
                    parse_definition(row.definition, where), row.definition, where
                )
            except SurveyDefinitionError as exc:
                problems.append(str(exc))
        for read in files:
            earlier = kept.get(read.key)
            if earlier is None and read.key not in stored:
                session.add(
                    SurveyVersion(
                        survey_id=read.key[0],
                        version=read.key[1],
                        definition=read.text,
                        source=read.source[-255:],
                    )
                )
                kept[read.key] = read
            elif earlier is not None and not same_definition(earlier.definition, read.definition):
                problems.append(
                    f"{read.source}: {read.key[0]} v{read.key[1]} differs from the version already "
                    "in use (kept in the database): give the changed survey the next version"
                )
        if problems:
            raise SurveyDefinitionError("\n".join(problems))
        await session.commit()
    return SurveyCatalog([k.definition for k in kept.values()])
