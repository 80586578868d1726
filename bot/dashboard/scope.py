"""The one answer to "may principal P do A on unit U" (every page, form, export and API of the
dashboard asks it here, never on its own).

* A **province admin** (role ``admin``) may do anything anywhere.
* A **unit manager** (``manager``, bound to a unit R) reads R's subtree, creates units under any
  unit of it, renames and moves the units strictly under R (never R itself, which is the
  province's to place and name) within the subtree, chooses their survey, and manages the API
  keys, the officials, the procedures assigned and the *viewer* logins of every unit of the
  subtree (the procedure catalogue, a national list, is the province admin's), and sets the
  quarterly agency-level criteria of every unit of it, its own included.
* A **viewer** (``viewer``, bound to R) reads R's subtree; nothing else.

Decided on the tree as it is now (``storage.units``): a unit moved out of a manager's subtree
leaves it at once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from storage.units import Tree


class Action(StrEnum):
    READ = "read"
    #: Create a unit under this one.
    ADD_UNDER = "add_under"
    #: Rename it, change its kind, move it.
    EDIT = "edit"
    #: Create and revoke its API keys.
    KEYS = "keys"
    #: Create, disable and reset its viewer logins (any login, for a province admin).
    LOGINS = "logins"
    #: Add, move and retire its officials.
    OFFICIALS = "officials"
    #: Assign and unassign catalogue procedures to it (the catalogue itself: admins only).
    PROCEDURES = "procedures"
    #: Set and clear its agency-level criteria (5, 8, 9) of a quarter.
    CRITERIA = "criteria"


class Who(Protocol):
    """What the rule needs of a principal (``auth.Principal``)."""

    @property
    def role(self) -> str: ...

    @property
    def agency_id(self) -> str | None: ...


MANAGER_ACTIONS = frozenset(
    {
        Action.READ,
        Action.ADD_UNDER,
        Action.EDIT,
        Action.KEYS,
        Action.LOGINS,
        Action.OFFICIALS,
        Action.PROCEDURES,
        Action.CRITERIA,
    }
)


def may(who: Who, tree: Tree, unit_id: str | None, action: Action) -> bool:
    """Whether ``who`` may do ``action`` on unit ``unit_id`` (None: the whole province)."""
    if who.role == "admin":
        return unit_id is None or unit_id in tree.units
    root = who.agency_id
    if root is None or root not in tree.units or unit_id is None or unit_id not in tree.units:
        return False
    if not tree.contains(root, unit_id):
        return False
    if who.role == "viewer":
        return action is Action.READ
    if who.role != "manager" or action not in MANAGER_ACTIONS:
        return False
    return action is not Action.EDIT or unit_id != root


def may_move(who: Who, tree: Tree, unit_id: str, parent_id: str | None) -> bool:
    """A move needs the unit's edit and the new parent's add-under (a root: admins only)."""
    if parent_id is None:
        return who.role == "admin" and unit_id in tree.units
    return may(who, tree, unit_id, Action.EDIT) and may(who, tree, parent_id, Action.ADD_UNDER)


def may_grant(who: Who, role: str) -> bool:
    """Which roles ``who`` may hand out: any for an admin, viewer for a manager."""
    return who.role == "admin" or (who.role == "manager" and role == "viewer")


def may_manage_login(
    who: Who, tree: Tree, target_role: str, target_unit: str | None, target_id: str, own_id: str
) -> bool:
    """Disable, reset or force a password change on another login."""
    if target_id == own_id:
        return False  # one's own login changes through the password page, never by a form
    if not may_grant(who, target_role):
        return False
    return may(who, tree, target_unit, Action.LOGINS)


def readable(who: Who, tree: Tree) -> set[str] | None:
    """The units ``who`` may read (None: all of them)."""
    if who.role == "admin":
        return None
    root = who.agency_id
    return set(tree.subtree(root)) if root in tree.units else set()


def home(who: Who) -> str | None:
    """The unit a page shows when none is asked for (the province for an admin)."""
    return None if who.role == "admin" else who.agency_id
