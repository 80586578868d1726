"""The province's units as a tree (the ``agency`` table with a parent): reading it, and the
only changes it allows (create under a parent, rename, move).

A move is cycle-proof: the new parent may not be the unit or any unit under it. Two moves at
once (A under B while B goes under A) would each pass that check alone, so every change of the
tree is serialised: on PostgreSQL by a transaction-level advisory lock taken before the tree is
read, on SQLite by the write lock every transaction takes at BEGIN (``storage.db``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Sessions
from storage.models import Agency

#: The kinds of unit, top down, after Decree 61/2018 and Decision 31/2021 (a province's
#: People's Committee office, its departments, its districts, communes and wards, the one-stop
#: desks that receive dossiers). A kind is a label for people; the tree's shape is free.
KINDS: tuple[str, ...] = ("province", "department", "district", "commune", "desk")
#: Held by every transaction that changes the tree (any constant bigint: "Units").
TREE_LOCK = 0x556E_6974_73
CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class UnitError(ValueError):
    """A change the tree refuses; ``reason`` is a stable key (the dashboard words it)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Unit:
    id: str
    code: str
    name: str
    kind: str
    parent_id: str | None


@dataclass(slots=True)
class Tree:
    """Every unit and its children, read in one query (a province holds hundreds, not more)."""

    units: dict[str, Unit]
    children: dict[str | None, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, units: Sequence[Unit]) -> Tree:
        tree = cls({u.id: u for u in units})
        for unit in sorted(units, key=lambda u: u.code):
            parent = unit.parent_id if unit.parent_id in tree.units else None
            tree.children.setdefault(parent, []).append(unit.id)
        return tree

    def roots(self) -> list[str]:
        return list(self.children.get(None, []))

    def by_code(self, code: str) -> Unit | None:
        return next((u for u in self.units.values() if u.code == code), None)

    def subtree(self, unit_id: str) -> list[str]:
        """The unit and every unit under it, parents before children."""
        out: list[str] = []
        stack = [unit_id]
        while stack:
            current = stack.pop()
            if current in out:  # a cycle in stored data must not loop forever
                continue
            out.append(current)
            stack.extend(reversed(self.children.get(current, [])))
        return out

    def ancestors(self, unit_id: str) -> list[str]:
        """The unit's parent, grandparent, … up to its root."""
        out: list[str] = []
        current = self.units[unit_id].parent_id if unit_id in self.units else None
        while current is not None and current in self.units and current not in out:
            out.append(current)
            current = self.units[current].parent_id
        return out

    def contains(self, root_id: str, unit_id: str) -> bool:
        """Whether ``unit_id`` is ``root_id`` or lies under it."""
        return unit_id == root_id or root_id in self.ancestors(unit_id)

    def depth(self, unit_id: str) -> int:
        return len(self.ancestors(unit_id))

    def walk(self, root_id: str | None = None) -> Iterator[tuple[Unit, int]]:
        """(unit, depth below the start) for the whole tree or one subtree, parents first."""
        starts = self.roots() if root_id is None else [root_id]
        base = 0 if root_id is None else self.depth(root_id)
        for start in starts:
            for unit_id in self.subtree(start):
                yield self.units[unit_id], self.depth(unit_id) - base


async def read_tree(session: AsyncSession) -> Tree:
    rows = await session.execute(
        select(Agency.id, Agency.code, Agency.name, Agency.kind, Agency.parent_id)
    )
    return Tree.of([Unit(r.id, r.code, r.name, r.kind, r.parent_id) for r in rows])


async def load_tree(sessions: Sessions) -> Tree:
    async with sessions() as session:
        return await read_tree(session)


async def _locked_tree(session: AsyncSession) -> Tree:
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": TREE_LOCK})
    return await read_tree(session)


def _check_name(name: str) -> str:
    name = " ".join(name.split())
    if not name or len(name) > 255:
        raise UnitError("bad_name", "a unit's name must have 1 to 255 characters")
    return name


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UnitError("bad_kind", f"kind must be one of {', '.join(KINDS)}")
    return kind


async def create_unit(
    sessions: Sessions, code: str, name: str, kind: str, parent_id: str | None
) -> Unit:
    """A new unit under ``parent_id`` (None: a new root)."""
    code = code.strip()
    if not CODE.match(code):
        raise UnitError("bad_code", "a unit's code is 1 to 64 of A-Z, a-z, 0-9, '.', '_', '-'")
    name, kind = _check_name(name), _check_kind(kind)
    async with sessions() as session:
        tree = await _locked_tree(session)
        if parent_id is not None and parent_id not in tree.units:
            raise UnitError("no_parent", "the parent unit does not exist")
        if tree.by_code(code) is not None:
            raise UnitError("code_taken", f"a unit with code {code!r} already exists")
        agency = Agency(code=code, name=name, kind=kind, parent_id=parent_id)
        session.add(agency)
        await session.commit()
        return Unit(agency.id, code, name, kind, parent_id)


async def rename_unit(sessions: Sessions, unit_id: str, name: str, kind: str) -> Unit:
    name, kind = _check_name(name), _check_kind(kind)
    async with sessions() as session:
        agency = await session.get(Agency, unit_id)
        if agency is None:
            raise UnitError("no_unit", "no such unit")
        agency.name, agency.kind = name, kind
        await session.commit()
        return Unit(agency.id, agency.code, name, kind, agency.parent_id)


async def move_unit(sessions: Sessions, unit_id: str, parent_id: str | None) -> Unit:
    """Put ``unit_id`` under ``parent_id`` (None: make it a root); never into its own subtree."""
    async with sessions() as session:
        tree = await _locked_tree(session)
        if unit_id not in tree.units:
            raise UnitError("no_unit", "no such unit")
        if parent_id is not None:
            if parent_id not in tree.units:
                raise UnitError("no_parent", "the parent unit does not exist")
            if tree.contains(unit_id, parent_id):
                raise UnitError("cycle", "a unit cannot move under itself or a unit under it")
        agency = await session.get(Agency, unit_id)
        assert agency is not None
        agency.parent_id = parent_id
        await session.commit()
        return Unit(agency.id, agency.code, agency.name, agency.kind, parent_id)
