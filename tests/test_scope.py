"""The one rule of who may do what on which unit (``bot/dashboard/scope.py``), over a small
province: every role against every unit and action."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bot.dashboard import scope
from bot.dashboard.scope import Action
from storage.units import Tree, Unit

TREE = Tree.of(
    [
        Unit("P", "tinh", "Tỉnh", "province", None),
        Unit("S", "so", "Sở", "department", "P"),
        Unit("D", "quan", "Quận", "district", "P"),
        Unit("W", "phuong", "Phường", "commune", "D"),
        Unit("K", "mot-cua", "Một cửa", "desk", "W"),
    ]
)


@dataclass(frozen=True)
class Who:
    role: str
    agency_id: str | None


ADMIN, MANAGER, VIEWER = Who("admin", None), Who("manager", "D"), Who("viewer", "D")


@pytest.mark.parametrize("action", list(Action))
def test_a_province_admin_may_do_everything_anywhere(action: Action) -> None:
    assert all(scope.may(ADMIN, TREE, unit, action) for unit in (None, *TREE.units))
    assert not scope.may(ADMIN, TREE, "nowhere", action)


def test_a_manager_acts_inside_its_subtree_and_never_on_its_own_unit_s_place() -> None:
    inside: tuple[str, ...] = ("D", "W", "K")
    outside: tuple[str | None, ...] = ("P", "S", None, "nowhere")
    for unit in inside:
        assert scope.may(MANAGER, TREE, unit, Action.READ)
        assert scope.may(MANAGER, TREE, unit, Action.ADD_UNDER)
        assert scope.may(MANAGER, TREE, unit, Action.KEYS)
        assert scope.may(MANAGER, TREE, unit, Action.LOGINS)
        assert scope.may(MANAGER, TREE, unit, Action.OFFICIALS)
        assert scope.may(MANAGER, TREE, unit, Action.PROCEDURES)
        assert scope.may(MANAGER, TREE, unit, Action.EDIT) == (unit != "D")
    for elsewhere in outside:
        assert not any(scope.may(MANAGER, TREE, elsewhere, a) for a in Action), elsewhere
    assert scope.may_move(MANAGER, TREE, "K", "D")
    assert not scope.may_move(MANAGER, TREE, "K", "S")  # out of its subtree
    assert not scope.may_move(MANAGER, TREE, "D", "W")  # its own unit
    assert not scope.may_move(MANAGER, TREE, "K", None)  # a new root
    assert scope.may_move(ADMIN, TREE, "K", None)


def test_a_viewer_reads_its_subtree_only_and_changes_nothing() -> None:
    for unit in TREE.units:
        assert scope.may(VIEWER, TREE, unit, Action.READ) == (unit in ("D", "W", "K"))
        assert not any(scope.may(VIEWER, TREE, unit, a) for a in Action if a is not Action.READ)
    assert scope.readable(VIEWER, TREE) == {"D", "W", "K"}
    assert scope.readable(ADMIN, TREE) is None
    assert scope.readable(Who("viewer", "gone"), TREE) == set()


def test_who_may_hand_out_and_manage_which_logins() -> None:
    assert [r for r in ("admin", "manager", "viewer") if scope.may_grant(MANAGER, r)] == ["viewer"]
    assert not any(scope.may_grant(VIEWER, r) for r in ("admin", "manager", "viewer"))
    assert scope.may_manage_login(MANAGER, TREE, "viewer", "W", "u1", "me")
    assert not scope.may_manage_login(MANAGER, TREE, "viewer", "S", "u1", "me")
    assert not scope.may_manage_login(MANAGER, TREE, "manager", "W", "u1", "me")
    assert not scope.may_manage_login(ADMIN, TREE, "admin", None, "me", "me")  # not oneself
    assert scope.may_manage_login(ADMIN, TREE, "admin", None, "u2", "me")
    # Unknown roles are nobody's.
    assert not scope.may(Who("auditor", "D"), TREE, "D", Action.READ)
