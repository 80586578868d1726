"""A unit's officials and procedures: idempotent upserts, whole-list syncs, moves and leaves.

The system of record is the agency's one-stop system (it pushes through the sync API) or an
admin (the CLI); both land here. Nothing is ever deleted, because ratings point at officials
and procedures: an official absent from a whole list is marked *left*, a procedure absent from
it is *unassigned* from the unit. A move is a new official row in the new unit and the old row
marked *moved*, so past ratings keep the unit and official they rated.

Upserts race (two pushes at once, two units creating one new national procedure): the unique
constraints decide, and the loser retries its whole transaction on what the winner wrote.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import BindParameter, Select, bindparam, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storage.backoff import backoff
from storage.db import Sessions
from storage.models import (
    OFFICIAL_ACTIVE,
    OFFICIAL_LEFT,
    OFFICIAL_MOVED,
    Agency,
    Official,
    Procedure,
    ProcedureAssignment,
    utcnow,
)
from storage.upsert import chunks

T = TypeVar("T")
ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class OfficialEntry:
    code: str
    name: str
    #: active or left (a move is the admin's: it names two units)
    status: str = OFFICIAL_ACTIVE


@dataclass(frozen=True, slots=True)
class ProcedureEntry:
    code: str
    name: str
    field: str | None


@dataclass(slots=True)
class SyncResult:
    """What a sync changed, by code: the answer the agency's system logs."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: officials marked left, or procedures unassigned, because the whole list left them out
    retired: list[str] = field(default_factory=list)


class Problem(Exception):
    """Input the directory refuses, naming the item's field (``procedures.2.field``)."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {p}" for f, p in problems))
        self.problems = list(problems)


class Unknown(Exception):
    """No such unit or official (the CLI's 'not found')."""


async def retrying(sessions: Sessions, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in a transaction, again when a concurrent writer won a unique constraint
    (PostgreSQL) or held the write lock (SQLite): the next try reads what it wrote."""
    for attempt in range(ATTEMPTS):
        async with sessions() as session:
            try:
                result = await work(session)
                await session.commit()
                return result
            except (IntegrityError, OperationalError):
                await session.rollback()
                if attempt == ATTEMPTS - 1:
                    raise
        # A short jittered pause, so racers that lost together do not collide again at once.
        await asyncio.sleep(backoff(attempt + 1, base=0.02, cap=0.5).total_seconds())
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------ officials
async def sync_officials(
    sessions: Sessions,
    agency_id: str,
    entries: Sequence[OfficialEntry],
    whole: bool,
    today: dt.date,
) -> SyncResult:
    """Upsert ``entries`` in the unit; with ``whole``, mark every other active official left."""

    async def work(session: AsyncSession) -> SyncResult:
        result = SyncResult()
        rows = {
            o.code: o
            for o in (
                await session.execute(select(Official).where(Official.agency_id == agency_id))
            ).scalars()
        }
        for entry in entries:
            row = rows.get(entry.code)
            if row is None:
                session.add(_new_official(agency_id, entry, today))
                result.created.append(entry.code)
            elif _apply_official(row, entry, today):
                result.updated.append(entry.code)
            else:
                result.unchanged.append(entry.code)
        if whole:
            listed = {e.code for e in entries}
            for code, row in sorted(rows.items()):
                if code not in listed and row.status == OFFICIAL_ACTIVE:
                    row.status, row.ended_on = OFFICIAL_LEFT, today
                    result.retired.append(code)
        await session.flush()
        return result

    return await retrying(sessions, work)


def _new_official(agency_id: str, entry: OfficialEntry, today: dt.date) -> Official:
    left = entry.status == OFFICIAL_LEFT
    return Official(
        agency_id=agency_id,
        code=entry.code,
        name=entry.name,
        status=entry.status,
        ended_on=today if left else None,
    )


def _apply_official(row: Official, entry: OfficialEntry, today: dt.date) -> bool:
    """Bring ``row`` to ``entry``; True when anything changed. Listing a moved or left
    official as active brings them back to this unit (the agency's system knows)."""
    changed = row.name != entry.name or row.status != entry.status
    if not changed:
        return False
    row.name = entry.name
    if row.status != entry.status:
        row.status = entry.status
        row.ended_on = None if entry.status == OFFICIAL_ACTIVE else today
        row.moved_to_id = None
    return True


@dataclass(frozen=True, slots=True)
class OfficialRow:
    """An official as the management page lists it."""

    code: str
    name: str
    unit_code: str
    status: str
    ended_on: dt.date | None
    moved_to: str | None


async def officials_of(sessions: Sessions, unit_ids: Iterable[str] | None) -> list[OfficialRow]:
    """The officials of these units (None: every unit), active first, by unit and code."""
    target = aliased(Official)
    target_unit = aliased(Agency)
    stmt = (
        select(Official, Agency.code, target_unit.code)
        .join(Agency, Agency.id == Official.agency_id)
        .outerjoin(target, target.id == Official.moved_to_id)
        .outerjoin(target_unit, target_unit.id == target.agency_id)
    )
    if unit_ids is not None:
        stmt = stmt.where(Official.agency_id.in_(sorted(unit_ids)))
    async with sessions() as session:
        rows = (await session.execute(stmt)).all()
    listed = [
        OfficialRow(o.code, o.name, unit_code, o.status, o.ended_on, moved_to)
        for o, unit_code, moved_to in rows
    ]
    return sorted(listed, key=lambda r: (r.status != OFFICIAL_ACTIVE, r.unit_code, r.code))


async def official_view(
    sessions: Sessions, agency_id: str, code: str
) -> tuple[Official, str | None] | None:
    """The unit's official and the code of the unit they moved to (None: not moved)."""
    async with sessions() as session:
        row = (
            await session.execute(
                select(Official).where(Official.agency_id == agency_id, Official.code == code)
            )
        ).scalar_one_or_none()
        if row is None:
            return None
        moved_to = None
        if row.moved_to_id is not None:
            moved_to = await session.scalar(
                select(Agency.code)
                .join(Official, Official.agency_id == Agency.id)
                .where(Official.id == row.moved_to_id)
            )
        return row, moved_to


async def move_official(
    sessions: Sessions,
    from_agency: str,
    code: str,
    to_agency: str,
    today: dt.date,
    new_code: str | None = None,
) -> str:
    """Move an active official to another unit (by agency codes); returns their code there.

    Their row in the old unit stays, marked moved, with the ratings it has; the new unit gets
    a new active row (reactivated if they served there before)."""

    async def work(session: AsyncSession) -> str:
        source = await _agency_id(session, from_agency)
        target = await _agency_id(session, to_agency)
        if source == target:
            raise Problem([("to", "the official is already in this unit")])
        row = (
            await session.execute(
                select(Official).where(Official.agency_id == source, Official.code == code)
            )
        ).scalar_one_or_none()
        if row is None:
            raise Unknown(f"no official {code!r} in {from_agency!r}")
        if row.status != OFFICIAL_ACTIVE:
            raise Problem([("code", f"official {code!r} has already {row.status}")])
        there_code = new_code or code
        there = (
            await session.execute(
                select(Official).where(Official.agency_id == target, Official.code == there_code)
            )
        ).scalar_one_or_none()
        if there is None:
            there = Official(agency_id=target, code=there_code, name=row.name)
            session.add(there)
        elif there.status == OFFICIAL_ACTIVE:
            raise Problem([("new_code", f"{to_agency!r} already has an active {there_code!r}")])
        there.status, there.ended_on, there.moved_to_id = OFFICIAL_ACTIVE, None, None
        await session.flush()
        row.status, row.ended_on, row.moved_to_id = OFFICIAL_MOVED, today, there.id
        return there_code

    return await retrying(sessions, work)


async def leave_official(sessions: Sessions, agency: str, code: str, today: dt.date) -> None:
    """Mark an official left (by agency code): no new result may name them."""

    async def work(session: AsyncSession) -> None:
        agency_id = await _agency_id(session, agency)
        row = (
            await session.execute(
                select(Official).where(Official.agency_id == agency_id, Official.code == code)
            )
        ).scalar_one_or_none()
        if row is None:
            raise Unknown(f"no official {code!r} in {agency!r}")
        if row.status != OFFICIAL_LEFT:
            row.status, row.ended_on, row.moved_to_id = OFFICIAL_LEFT, today, None

    await retrying(sessions, work)


async def _agency_id(session: AsyncSession, code: str) -> str:
    agency_id = await session.scalar(select(Agency.id).where(Agency.code == code))
    if agency_id is None:
        raise Unknown(f"no agency with code {code!r}")
    return str(agency_id)


# ------------------------------------------------------------------------------ procedures
async def sync_procedures(
    sessions: Sessions,
    agency_id: str,
    entries: Sequence[ProcedureEntry],
    whole: bool,
    item_path: Callable[[int], str] = lambda i: f"procedures.{i}.",
) -> SyncResult:
    """Upsert ``entries`` into the national catalogue and assign them to the unit; with
    ``whole``, unassign every other procedure of the unit.

    A procedure's name and field are national facts that every unit handling it reads its
    figures by, so a unit may set them only while no other unit has the procedure assigned;
    a different value for a shared one is refused, naming the item and field."""

    async def work(session: AsyncSession) -> SyncResult:
        result = SyncResult()
        codes = [e.code for e in entries]
        catalogue = {
            p.code: p
            for p in (
                await session.execute(select(Procedure).where(Procedure.code.in_(codes)))
            ).scalars()
        }
        assigned = {
            a.procedure_id: a
            for a in (
                await session.execute(
                    select(ProcedureAssignment).where(ProcedureAssignment.agency_id == agency_id)
                )
            ).scalars()
        }
        shared = await _shared(session, agency_id, [p.id for p in catalogue.values()])
        problems: list[tuple[str, str]] = []
        for index, entry in enumerate(entries):
            procedure = catalogue.get(entry.code)
            changed = False
            if procedure is None:
                procedure = Procedure(code=entry.code, name=entry.name, field=entry.field)
                session.add(procedure)
                await session.flush()
                result.created.append(entry.code)
            else:
                for name in ("name", "field"):
                    if getattr(procedure, name) == getattr(entry, name):
                        continue
                    if procedure.id in shared:
                        problems.append(
                            (
                                f"{item_path(index)}{name}",
                                f"procedure {entry.code!r} is shared with other units: its "
                                f"{name} is {getattr(procedure, name)!r}, set by the province "
                                "admin (surveybot procedure)",
                            )
                        )
                    else:
                        setattr(procedure, name, getattr(entry, name))
                        changed = True
            assignment = assigned.get(procedure.id)
            if assignment is None:
                session.add(ProcedureAssignment(agency_id=agency_id, procedure_id=procedure.id))
                changed = True
            elif not assignment.active:
                assignment.active, assignment.updated_at = True, utcnow()
                changed = True
            if entry.code not in result.created:
                (result.updated if changed else result.unchanged).append(entry.code)
        if problems:
            raise Problem(problems)
        if whole:
            listed = {p.id for p in catalogue.values()}
            names = await _codes(session, [pid for pid in assigned if pid not in listed])
            for pid, assignment in sorted(assigned.items(), key=lambda kv: names.get(kv[0], "")):
                if pid not in listed and assignment.active and pid in names:
                    assignment.active, assignment.updated_at = False, utcnow()
                    result.retired.append(names[pid])
        await session.flush()
        return result

    return await retrying(sessions, work)


async def _shared(session: AsyncSession, agency_id: str, procedure_ids: list[str]) -> set[str]:
    """The procedures another unit has assigned (active or not: its past figures read it)."""
    if not procedure_ids:
        return set()
    rows = await session.execute(
        select(ProcedureAssignment.procedure_id).where(
            ProcedureAssignment.procedure_id.in_(procedure_ids),
            ProcedureAssignment.agency_id != agency_id,
        )
    )
    return {r for (r,) in rows}


async def _codes(session: AsyncSession, procedure_ids: list[str]) -> dict[str, str]:
    if not procedure_ids:
        return {}
    rows = await session.execute(
        select(Procedure.id, Procedure.code).where(Procedure.id.in_(procedure_ids))
    )
    return {pid: code for pid, code in rows}


async def procedure_view(
    sessions: Sessions, agency_id: str, code: str
) -> tuple[Procedure, bool] | None:
    """The procedure and whether it is assigned to the unit now."""
    async with sessions() as session:
        procedure = (
            await session.execute(select(Procedure).where(Procedure.code == code))
        ).scalar_one_or_none()
        if procedure is None:
            return None
        active = await session.scalar(
            select(ProcedureAssignment.active).where(
                ProcedureAssignment.agency_id == agency_id,
                ProcedureAssignment.procedure_id == procedure.id,
            )
        )
        return procedure, bool(active)


async def set_procedure(
    sessions: Sessions, code: str, name: str | None, field_code: str | None
) -> bool:
    """The province admin's edit of a catalogue entry (name, field); True when created."""

    async def work(session: AsyncSession) -> bool:
        procedure = (
            await session.execute(select(Procedure).where(Procedure.code == code))
        ).scalar_one_or_none()
        if procedure is None:
            if name is None:
                raise Problem([("name", f"a new procedure {code!r} needs a name")])
            session.add(Procedure(code=code, name=name, field=field_code))
            return True
        if name is not None:
            procedure.name = name
        if field_code is not None:
            procedure.field = field_code
        return False

    return await retrying(sessions, work)


async def edit_procedure(
    sessions: Sessions, code: str, name: str, field_code: str | None
) -> tuple[str, str | None] | None:
    """The dashboard's edit of a catalogue entry: the name and field given replace the old
    ones (``None`` clears the field, unlike ``set_procedure``'s "leave it"). The previous
    (name, field), for the audit; None when the procedure was created."""

    async def work(session: AsyncSession) -> tuple[str, str | None] | None:
        procedure = (
            await session.execute(select(Procedure).where(Procedure.code == code))
        ).scalar_one_or_none()
        if procedure is None:
            session.add(Procedure(code=code, name=name, field=field_code))
            return None
        before = (procedure.name, procedure.field)
        procedure.name, procedure.field = name, field_code
        return before

    return await retrying(sessions, work)


async def assign_procedure(sessions: Sessions, agency: str, code: str, active: bool) -> None:
    """Assign (or unassign) a catalogue procedure to a unit, by codes."""

    async def work(session: AsyncSession) -> None:
        agency_id = await _agency_id(session, agency)
        procedure_id = await session.scalar(select(Procedure.id).where(Procedure.code == code))
        if procedure_id is None:
            raise Unknown(f"no procedure with code {code!r}")
        row = await session.get(ProcedureAssignment, (agency_id, procedure_id))
        if row is None:
            session.add(
                ProcedureAssignment(agency_id=agency_id, procedure_id=procedure_id, active=active)
            )
        else:
            row.active, row.updated_at = active, utcnow()

    await retrying(sessions, work)


async def catalogue(sessions: Sessions) -> list[Procedure]:
    """The national catalogue, by code (a province handles hundreds of procedures, not more)."""
    async with sessions() as session:
        return list((await session.execute(select(Procedure).order_by(Procedure.code))).scalars())


async def assignments(sessions: Sessions, unit_ids: Iterable[str] | None) -> set[tuple[str, str]]:
    """The (unit id, procedure code) pairs assigned now, within ``unit_ids`` (None: all)."""
    query = (
        select(ProcedureAssignment.agency_id, Procedure.code)
        .join(Procedure, Procedure.id == ProcedureAssignment.procedure_id)
        .where(ProcedureAssignment.active.is_(True))
    )
    if unit_ids is not None:
        wanted = list(unit_ids)
        if not wanted:
            return set()
        query = query.where(ProcedureAssignment.agency_id.in_(wanted))
    async with sessions() as session:
        return {(agency_id, code) for agency_id, code in await session.execute(query)}


# ------------------------------------------------------------------------------ reporting
@dataclass(frozen=True, slots=True)
class Reference:
    """What a result report or registration may name: the row's id, or why it may not."""

    id: str | None
    refusal: tuple[str, str] | None = None
    #: A procedure's own survey (``Procedure.survey_id``), read with it: what a dossier naming
    #: no survey gets before its unit's.
    survey: str | None = None


def _official_reference(row: Official | None, code: str) -> Reference:
    if row is None:
        return Reference(
            None, ("unknown_official", f"no official with code {code!r} in this agency")
        )
    if row.status == OFFICIAL_LEFT:
        return Reference(
            None, ("official_left", f"official {code!r} left this unit on {row.ended_on}")
        )
    if row.status == OFFICIAL_MOVED:
        return Reference(
            None,
            ("official_moved", f"official {code!r} moved to another unit on {row.ended_on}"),
        )
    return Reference(row.id)


def _procedure_reference(
    procedure_id: str | None,
    assignments: dict[str, bool],
    agency_id: str,
    code: str,
    survey: str | None = None,
) -> Reference:
    if procedure_id is None:
        return Reference(None, ("unknown_procedure", f"no procedure with code {code!r}"))
    if assignments and not assignments.get(agency_id, False):
        return Reference(
            None,
            ("procedure_unassigned", f"procedure {code!r} is not assigned to this unit"),
        )
    return Reference(str(procedure_id), survey=survey)


async def official_for_report(session: AsyncSession, agency_id: str, code: str) -> Reference:
    """The unit's active official; else the error code and detail naming why not."""
    row = (
        await session.execute(
            select(Official).where(Official.agency_id == agency_id, Official.code == code)
        )
    ).scalar_one_or_none()
    return _official_reference(row, code)


async def procedure_for_report(session: AsyncSession, agency_id: str, code: str) -> Reference:
    """A catalogue procedure the unit handles: assigned to it, or assigned to no unit yet;
    its survey read by the same query."""
    found = (
        await session.execute(
            select(Procedure.id, Procedure.survey_id).where(Procedure.code == code)
        )
    ).first()
    procedure_id, survey = found if found is not None else (None, None)
    assignments: dict[str, bool] = {}
    if procedure_id is not None:
        assignments = {
            a: active
            for a, active in await session.execute(
                select(ProcedureAssignment.agency_id, ProcedureAssignment.active).where(
                    ProcedureAssignment.procedure_id == procedure_id
                )
            )
        }
    return _procedure_reference(procedure_id, assignments, agency_id, code, survey)


async def references_for_reports(
    session: AsyncSession,
    agency_id: str,
    procedure_codes: Iterable[str],
    official_codes: Iterable[str],
) -> tuple[dict[str, Reference], dict[str, Reference]]:
    """``procedure_for_report`` and ``official_for_report`` for a whole batch of results, by
    the same rules, in a few IN-list queries whatever the batch's size."""
    procedure_wanted, official_wanted = set(procedure_codes), set(official_codes)
    procedures: dict[str, str] = {}
    surveys: dict[str, str | None] = {}
    for part in chunks(sorted(procedure_wanted)):
        rows = await session.execute(
            select(Procedure.code, Procedure.id, Procedure.survey_id).where(
                Procedure.code.in_(part)
            )
        )
        for code, pid, survey in rows:
            procedures[code], surveys[code] = pid, survey
    assignments: dict[str, dict[str, bool]] = {pid: {} for pid in procedures.values()}
    for part in chunks(sorted(assignments)):
        assigned = await session.execute(
            select(
                ProcedureAssignment.procedure_id,
                ProcedureAssignment.agency_id,
                ProcedureAssignment.active,
            ).where(ProcedureAssignment.procedure_id.in_(part))
        )
        for pid, aid, active in assigned:
            assignments[pid][aid] = active
    officials: dict[str, Official] = {}
    for part in chunks(sorted(official_wanted)):
        found = await session.execute(
            select(Official).where(Official.agency_id == agency_id, Official.code.in_(part))
        )
        officials.update({row.code: row for row in found.scalars()})
    return (
        {
            code: _procedure_reference(
                procedures.get(code),
                assignments.get(procedures.get(code, ""), {}),
                agency_id,
                code,
                surveys.get(code),
            )
            for code in procedure_wanted
        },
        {code: _official_reference(officials.get(code), code) for code in official_wanted},
    )


def _registration_references() -> Select[Any]:
    """``references_for_registration``'s one statement, built once and run with bound codes
    (a statement's construction and cache key cost more CPU than its round trip)."""
    agency_id: BindParameter[str] = bindparam("agency_id")
    code: BindParameter[str] = bindparam("procedure")
    official = select(Official).where(
        Official.agency_id == agency_id, Official.code == bindparam("official")
    )
    assignment = select(ProcedureAssignment.active).join(
        Procedure, Procedure.id == ProcedureAssignment.procedure_id
    )
    return select(
        select(Procedure.id).where(Procedure.code == code).scalar_subquery(),
        select(Procedure.survey_id).where(Procedure.code == code).scalar_subquery(),
        assignment.where(Procedure.code == code).exists(),
        assignment.where(
            Procedure.code == code, ProcedureAssignment.agency_id == agency_id
        ).scalar_subquery(),
        official.with_only_columns(Official.id).scalar_subquery(),
        official.with_only_columns(Official.status).scalar_subquery(),
        official.with_only_columns(Official.ended_on).scalar_subquery(),
    )


_REGISTRATION_REFERENCES = _registration_references()


async def references_for_registration(
    session: AsyncSession, agency_id: str, procedure_code: str | None, official_code: str | None
) -> tuple[Reference | None, Reference | None]:
    """``procedure_for_report`` and ``official_for_report`` of one registration in one SELECT
    of scalar subqueries (one round trip where those take three), by the same rules; None for
    a code not given."""
    if not procedure_code and not official_code:
        return None, None
    params = {"agency_id": agency_id, "procedure": procedure_code, "official": official_code}
    row = (await session.execute(_REGISTRATION_REFERENCES, params)).one()
    procedure_id, survey, any_assignment, own_assignment, official_id, status, ended_on = row
    procedure_ref = (
        _procedure_reference(
            procedure_id,
            {agency_id: bool(own_assignment)} if any_assignment else {},
            agency_id,
            procedure_code,
            survey,
        )
        if procedure_code
        else None
    )
    official_ref = (
        _official_reference(
            Official(id=official_id, status=status, ended_on=ended_on)
            if official_id is not None
            else None,
            official_code,
        )
        if official_code
        else None
    )
    return procedure_ref, official_ref
