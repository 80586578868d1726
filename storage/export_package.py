"""The row-level export as one ZIP: ``ratings.<fmt>``, ``comments.<fmt>`` and ``report.json``.

Why one ZIP: the ratings and the comments must stay two files (a comment tied to its rating
row brings the row's quasi-identifiers with it), and the rule and its counts must travel with
both, so a reader never has one without knowing what was done to it. A ZIP keeps the three
together in one download, and each member stays in the format asked for (CSV, XLSX or JSON
Lines).

Nothing is released before it is checked: the members are written to a temporary folder, the
plan is checked again on the rows actually written (``storage.anonymise.Plan.summary``), and
only then does the ZIP stream out. Text members are deflated at level 1 (a million rows in well
under a second); an XLSX member is already compressed and is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from storage import anonymise, export_pass, export_rows
from storage.anonymise import AnonymityError, Plan, Rule
from storage.db import Sessions
from storage.export_formats import Batches, csv_header, write_file
from storage.stats import Thresholds


class ExportSpec(Protocol):
    """What a package is cut by: ``storage.export.ExportSpec`` (which imports this module), read
    here through this protocol so the two modules do not import each other."""

    @property
    def level(self) -> str: ...
    @property
    def fmt(self) -> str: ...
    @property
    def period(self) -> str: ...
    @property
    def agency_id(self) -> str | None: ...
    @property
    def until(self) -> dt.date | None: ...


CHUNK = 1 << 20
REPORT = "report.json"


class ChangedDuringExport(RuntimeError):
    """The rows written broke the plan: responses were erased while the export ran."""


@dataclass(slots=True)
class Member:
    """One file of the ZIP: byte strings and paths of files, in order."""

    name: str
    pieces: list[bytes | str]
    compress: bool = True


@dataclass(slots=True)
class Package:
    members: list[Member]
    report: dict[str, Any]

    @property
    def rows(self) -> int:
        return int(self.report["ratings"]["rows"])

    @property
    def comments(self) -> int:
        return int(self.report["comments"]["rows"])


def filename(spec: ExportSpec) -> str:
    return f"surveybot-{spec.level}-{spec.period}.zip"


async def build(
    sessions: Sessions,
    spec: ExportSpec,
    thresholds: Thresholds,
    folder: str,
    *,
    anonymise_rows: bool = True,
) -> Package:
    """Write the members into ``folder`` and check them; the report says what was done."""
    async with export_rows.reader(sessions) as reading:
        return await _build(reading, spec, thresholds, folder, anonymise_rows)


async def _build(
    sessions: Sessions,
    spec: ExportSpec,
    thresholds: Thresholds,
    folder: str,
    anonymise_rows: bool,
) -> Package:
    with contextlib.ExitStack() as stack:
        source = export_pass.RatingSource(
            spec.agency_id, spec.period, [], export_rows.fresh_key(), None, [], until=spec.until
        )
        parts = None
        if await export_pass.in_parts(sessions, spec.fmt, spec.agency_id):
            # The workers start, open their parts and let the database sort them while the
            # plan is made here.
            parts = export_pass.start_parts(sessions, source, folder)
            stack.callback(parts.close)
        ref = await export_rows.reference(sessions, spec.agency_id, spec.until)
        rule = Rule(thresholds.k_group, thresholds.k_official)
        plan: Plan | None = None
        source.questions = ref.questions
        if anonymise_rows:
            plan = anonymise.plan(zip(*ref.cells, strict=True), rule, spec.period)
            source.keys = plan.keys
            source.heads = export_rows.planned_heads(plan, ref.names)
            source.seen.counts = [0] * len(plan.keys)
        else:
            source.names = ref.names
        ref.cells = ([], [])  # the plan holds what is needed of them
        header = export_rows.rating_header(ref.questions)
        ratings = await _ratings(sessions, spec, source, header, folder, parts)
    allowed: set[tuple[str, str]] | None = None
    summary: anonymise.Summary | None = None
    if plan is not None:
        try:
            summary = plan.summary(source.seen.counts, source.seen.unplanned)
        except AnonymityError as exc:
            raise ChangedDuringExport(f"{exc}; run the export again") from None
        allowed = plan.comment_groups(source.seen.counts)
    withheld = [0]
    comments_path = os.path.join(folder, f"comments.{spec.fmt}")
    counted = [0]
    batches = export_rows.comment_batches(
        sessions,
        spec.agency_id,
        ref.names.agencies,
        allowed,
        withheld,
        scan=ref.texts,
        until=spec.until,
    )
    with open(comments_path, "wb") as handle:  # noqa: ASYNC230 (a local temporary file)
        await write_file(_counting(batches, counted), spec.fmt, handle)
    report = _report(spec, rule, plan, summary, ref, header, source, counted[0], withheld[0])
    return Package(
        [
            ratings,
            Member(f"comments.{spec.fmt}", [comments_path], compress=spec.fmt != "xlsx"),
            Member(REPORT, [json.dumps(report, ensure_ascii=False, indent=2).encode("utf-8")]),
        ],
        report,
    )


async def _ratings(
    sessions: Sessions,
    spec: ExportSpec,
    source: export_pass.RatingSource,
    header: list[str],
    folder: str,
    parts: export_pass.Parts | None,
) -> Member:
    name = f"ratings.{spec.fmt}"
    if parts is not None:
        paths = await parts.run(source)
        return Member(name, [csv_header(header).encode("utf-8"), *paths])
    path = os.path.join(folder, name)

    async def batches() -> Batches:
        yield [header]
        async for batch in export_pass.rating_batches(sessions, source):
            yield batch

    with open(path, "wb") as handle:  # noqa: ASYNC230 (a local temporary file)
        await write_file(batches(), spec.fmt, handle)
    return Member(name, [path], compress=spec.fmt != "xlsx")


async def _counting(batches: Batches, counted: list[int]) -> Batches:
    """The batches unchanged; data rows counted into ``counted[0]`` (the header is not)."""
    yield await anext(batches)
    async for batch in batches:
        counted[0] += len(batch)
        yield batch


def _report(
    spec: ExportSpec,
    rule: Rule,
    plan: Plan | None,
    summary: anonymise.Summary | None,
    ref: export_rows.Reference,
    header: list[str],
    source: export_pass.RatingSource,
    comments: int,
    withheld: int,
) -> dict[str, Any]:
    agencies = ref.names.agencies
    ratings: dict[str, Any] = {
        "file": f"ratings.{spec.fmt}",
        "rows": source.seen.written,
        "columns": header,
        "columns_withheld": [*export_rows.WITHHELD_COLUMNS, *(f"q_{q}" for q in ref.free_text)],
        "pseudonym": "keyed hash of the response id under a fresh random key for this export",
    }
    if summary is not None and plan is not None:
        ratings |= {
            "rows_read": summary.rows_read,
            "rows_suppressed": summary.suppressed,
            "rows_dropped": summary.dropped,
            "generalised": summary.generalised,
            "combinations": summary.combinations,
            "smallest_combination": summary.smallest,
            "period_start": summary.period_start,
            "period_coarsest": summary.period_coarsest,
            "agencies": [a | {"agency": agencies.get(a["agency"], "")} for a in summary.agencies],
        }
    return {
        "export": "responses",
        "created_on": dt.datetime.now(dt.UTC).date().isoformat(),
        "scope": {
            "agency": agencies.get(spec.agency_id, "") if spec.agency_id else "*",
            "period_requested": spec.period,
            "format": spec.fmt,
        },
        "anonymised": plan is not None,
        "rule": list(anonymise.RULE) if plan is not None else ["none: anonymise=False (tests)"],
        "quasi_identifiers": [
            "agency",
            "official",
            "procedure",
            "field",
            "channel",
            "language",
            "period",
        ],
        "k": rule.as_dict() | {"comments": max(rule.k_official, rule.k_group)},
        "ratings": ratings,
        "comments": {
            "file": f"comments.{spec.fmt}",
            "rows": comments,
            "withheld": withheld,
            "columns": export_rows.COMMENT_COLUMNS,
            "group": "agency x quarter",
        },
    }


# ------------------------------------------------------------------------------ the ZIP
class _Sink:
    """A write-only stream the ZIP is written into, emptied after every piece (zipfile writes
    data descriptors when it cannot seek, so nothing has to be rewritten afterwards)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


async def zip_chunks(members: list[Member]) -> AsyncIterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as archive:
        for member in members:
            archive.compression = zipfile.ZIP_DEFLATED if member.compress else zipfile.ZIP_STORED
            archive.compresslevel = 1 if member.compress else None
            with archive.open(member.name, "w", force_zip64=True) as dest:
                for piece in member.pieces:
                    if isinstance(piece, bytes):
                        dest.write(piece)
                        continue
                    with open(piece, "rb") as handle:  # noqa: ASYNC230 (a local temporary file)
                        while chunk := handle.read(CHUNK):
                            await asyncio.to_thread(dest.write, chunk)
                            if data := sink.take():
                                yield data
        # (the central directory is written when the archive closes)
    if data := sink.take():
        yield data


async def stream(
    sessions: Sessions, spec: ExportSpec, thresholds: Thresholds, *, anonymise_rows: bool = True
) -> AsyncIterator[bytes]:
    """The ZIP's bytes. The files are written and checked before the first chunk comes out, so
    an export that fails (``ChangedDuringExport``) fails before anything was sent."""
    with export_rows.temporary_folder() as folder:
        package = await build(sessions, spec, thresholds, folder, anonymise_rows=anonymise_rows)
        async for chunk in zip_chunks(package.members):
            yield chunk


async def write(
    sessions: Sessions,
    spec: ExportSpec,
    thresholds: Thresholds,
    out: IO[bytes],
    *,
    anonymise_rows: bool = True,
) -> Package:
    """The ZIP into a binary stream (a file, or stdout: no seeking needed)."""
    with export_rows.temporary_folder() as folder:
        package = await build(sessions, spec, thresholds, folder, anonymise_rows=anonymise_rows)
        async for chunk in zip_chunks(package.members):
            out.write(chunk)
    return package
