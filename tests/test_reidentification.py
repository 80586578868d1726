"""The agency plays the adversary it is (brief, invariant 5; issue 10, item 8).

It knows every citizen it served, with the official, the procedure, the day and the channel, and
(worst case) who answered. With its viewer login it takes every page and every aggregate export
of the dashboard before and after each single new rating of an open month, after the month is
released, and after late ratings and erasures of that month; it is also handed every row-level
file an admin can download. Its attacks (``tests/adversary.py``): small cells, differencing over
time, differencing across granularities, row linkage, and chaining what it learnt. The other two
agencies play the same game with their own viewers (a small agency has small remainders).

The same adversaries then play against the system with its protections off (k = 1, live counts
re-published after every change, the row-level files not anonymised), to show they matter.

What may differ between two looks at a page: only the session's CSRF token (stripped). Every
other byte of a page or an aggregate file comes from the releases and the settings, so the test
asks for identical bytes between any two looks that no release separates.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zipfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import delete, select

from bot.app import create_app
from bot.dashboard import auth
from bot.runtime import Runtime
from storage import export, releases
from storage.disclosure import Rule
from storage.models import Release, ReleaseFigures
from storage.stats import Thresholds
from tests import adversary
from tests.adminseed import release
from tests.adversary import (
    ADVERSARY,
    AGENCIES,
    Adversary,
    Citizen,
    Equation,
    Findings,
    Inference,
    Known,
    Snapshot,
    login,
)

SEPTEMBER = releases.period_of("month", dt.date(2026, 9, 1))
OCTOBER = releases.period_of("month", adversary.MONTH)
LIVE = Rule(1, 1)
K_GROUP, K_OFFICIAL = 5, 10
PASSWORD = "mat-khau-dai-du"
#: The moments the viewers of the two other agencies look; the adversary looks at every other
#: moment (these two add nothing to its own looks just before).
OTHERS_LOOK = ("start", "before release", "released", "end")
OTHERS_ONLY = ("before release", "end")


@dataclass
class RowFile:
    """One row-level file an admin can download (and might hand to an agency)."""

    name: str
    header: list[str]
    rows: list[list[str]]
    attack: str = "row linkage"

    @property
    def comments(self) -> bool:
        return "text" in self.header and "satisfaction" not in self.header


@dataclass
class World:
    """The system under attack, the truth, and what each agency saw over time."""

    runtime: Runtime
    viewers: dict[str, TestClient[Any, Any]]
    admin: TestClient[Any, Any]
    protections: bool
    month: adversary.Month
    stored: dict[int, str] = field(default_factory=dict)
    present: set[int] = field(default_factory=set)
    #: Per release label, the citizens it counted: a release says when it was published, and
    #: the agency knows who had rated by then.
    raters: dict[str, frozenset[int]] = field(default_factory=dict)
    snapshots: dict[str, list[Snapshot]] = field(default_factory=dict)
    files: list[RowFile] = field(default_factory=list)
    admin_exports: Snapshot | None = None
    #: The admin's ratings file before and after one new rating, and who rated in between.
    two_files: tuple[RowFile, RowFile, frozenset[int]] | None = None
    clock: dt.datetime = dt.datetime(2026, 10, 26, 1, 0, tzinfo=dt.UTC)

    def counted(self, period: releases.Period) -> frozenset[int]:
        return frozenset(
            c.id
            for c in self.month.everyone
            if c.id in self.present and period.starts_on <= c.known.day <= period.ends_on
        )

    async def add(self, citizens: list[Citizen]) -> None:
        self.stored |= await adversary.write(self.runtime, citizens)
        self.present |= {c.id for c in citizens}

    async def publish_due(self, now: dt.datetime) -> list[str]:
        """Protections on: the release job (closed periods, computed once, frozen)."""
        labels = await release(self.runtime, now)
        for label in labels:
            self.raters[label] = self.counted(releases.period_of("month", _first(label)))
        return labels

    async def publish_live(self, period: releases.Period) -> None:
        """Protections off: a live dashboard, i.e. the period re-published at every change."""
        self.clock += dt.timedelta(hours=1)
        async with self.runtime.sessions() as session:
            old = select(Release.id).where(Release.starts_on == period.starts_on)
            await session.execute(delete(ReleaseFigures).where(ReleaseFigures.release_id.in_(old)))
            await session.execute(delete(Release).where(Release.starts_on == period.starts_on))
            await session.commit()
        assert await releases.publish(self.runtime.sessions, period, LIVE, self.clock)
        self.raters[period.label] = self.counted(period)

    async def changed(self) -> None:
        """After every new rating or erasure: nothing with protections on, a re-publication off."""
        if not self.protections:
            await self.publish_live(OCTOBER)

    async def look(self, moment: str) -> None:
        for code, client in self.viewers.items():
            if moment in OTHERS_LOOK if code != ADVERSARY else moment not in OTHERS_ONLY:
                snap = await adversary.snapshot(client, moment, self.raters)
                self.snapshots.setdefault(code, []).append(snap)


def _first(label: str) -> dt.date:
    return dt.date.fromisoformat(f"{label}-01")


async def play(world: World) -> None:
    """One month as the agencies live it, with a look before and after every change."""
    runtime, month = world.runtime, world.month
    await world.add(month.september + month.october)
    await adversary.write(runtime, [], unanswered=8)
    ttl = runtime.settings.effective_release_delay_hours
    if world.protections:
        assert await world.publish_due(releases.release_time(SEPTEMBER, ttl)) == ["2026-09"]
    else:
        await world.publish_live(SEPTEMBER)
        await world.publish_live(OCTOBER)
    await world.look("start")
    for i, citizen in enumerate(month.singles, start=1):
        before = _ratings(await row_files(world)) if i == 1 else None
        await world.add([citizen])
        await world.changed()
        await world.look(f"after single rating {i} ({citizen.known.official})")
        if before is not None:
            # The admin's row-level file an hour before and after one rating.
            world.two_files = (before, _ratings(await row_files(world)), frozenset([citizen.id]))
    await world.look("before release")
    if world.protections:
        assert await world.publish_due(releases.release_time(OCTOBER, ttl)) == ["2026-10"]
    else:
        await world.publish_live(OCTOBER)
    await world.look("released")
    for citizen in month.late:
        await world.add([citizen])
        await world.changed()
        await world.look(f"after late rating ({citizen.known.official})")
    for citizen in month.erasures:
        await adversary.erase(runtime, world.stored[citizen.id])
        world.present.discard(citizen.id)
        await world.changed()
        await world.look(f"after erasure ({citizen.known.official})")
    await world.look("end")
    world.admin_exports = await admin_exports(world)
    world.files = await row_files(world)


def _ratings(files: list[RowFile]) -> RowFile:
    return next(f for f in files if "satisfaction" in f.header)


async def admin_exports(world: World) -> Snapshot:
    """Every aggregate file an admin can download (province-wide), as if handed to an agency."""
    snap = await adversary.snapshot(world.admin, "admin", world.raters, pages_too=False)
    assert snap.rows_status == 200
    return snap


async def row_files(world: World) -> list[RowFile]:
    """Protections on: what an admin downloads from the dashboard (row level, days asked for).
    Off: the same export with ``anonymise=False``, and the one-table dump of the store (every
    answer, free text inline), as if handed to the agency."""
    if world.protections:
        client = world.admin
        token = adversary.csrf_of(await (await client.get("/admin/exports")).text())
        response = await client.post(
            "/admin/exports/download",
            data={"csrf": token, "level": "responses", "format": "csv", "period": "day"},
        )
        assert response.status == 200
        return _unpacked(await response.read())
    thresholds = Thresholds(k_group=1, k_official=1)
    spec = export.ExportSpec(level="responses", fmt="csv", period="day")
    raw = b"".join(
        [
            c
            async for c in export.stream_export(
                world.runtime.sessions, spec, thresholds, anonymise=False
            )
        ]
    )
    header, rows = await export.response_rows(world.runtime.sessions, "day")
    dump = RowFile(
        "one-table dump", header, [[_text(v) for v in r] for r in rows], "row linkage (dump)"
    )
    return [*_unpacked(raw), dump]


def _unpacked(data: bytes) -> list[RowFile]:
    """The CSV members of a row-level ZIP (or a plain CSV)."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return [_csv("responses.csv", data.decode("utf-8-sig"))]
    files = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            if name.endswith(".csv"):
                files.append(_csv(name, archive.read(name).decode("utf-8-sig")))
            elif name == "report.json":
                report = json.loads(archive.read(name))
                files.append(RowFile(name, ["anonymised"], [[str(report.get("anonymised"))]]))
    return files


def _csv(name: str, text: str) -> RowFile:
    header, *rows = list(csv.reader(io.StringIO(text)))
    return RowFile(name, header, rows)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


@dataclass
class Outcome:
    findings: Findings
    #: Published figures, and differences between two looks, over a group below its k.
    small_published: list[Equation]
    small_differences: list[Equation]
    #: Figures formed by subtracting published ones of one release (a total minus its parts,
    #: a cell minus a cell inside it), over a group below its k.
    small_remainders: list[Equation]


def attack(world: World, code: str) -> Outcome:
    """Every attack of one agency on everything it saw or was handed.

    Each attack's equations are judged on their own (so each is credited with what it finds
    alone), then chaining runs over all of them together.
    """
    ours = Adversary(code, [c.known for c in world.month.everyone])
    read = [ours.read(s) for s in world.snapshots[code]]
    handed = ours.read(world.admin_exports) if world.admin_exports else []
    present = frozenset(world.present)
    attacks: dict[str, list[Equation]] = {
        "published": [*(e for eqs in read for e in eqs), *handed],
        "over time": [
            e
            for before, after in pairwise(read)
            for e in adversary.differences_over_time(before, after)
        ],
        "across": [
            e
            for eqs in read
            for e in adversary.differences_across_granularities(adversary.unique(eqs))
        ],
    }
    for f in world.files:
        if f.comments:
            attacks[f.name] = ours.comments(f.header, f.rows, present)
        elif "satisfaction" in f.header:
            attacks[f.name] = ours.rows(f.header, f.rows, present, f.attack)
    attacks = {name: adversary.unique(eqs) for name, eqs in attacks.items()}
    inferences: list[Inference] = []
    for equations in attacks.values():
        inferences += adversary.small_cells(equations)
    everything = adversary.unique(e for eqs in attacks.values() for e in eqs)
    inferences += adversary.chaining(everything, inferences)
    figures = [e for e in attacks["published"] if e.attack != "prior"]
    return Outcome(
        judge(world, ours, inferences),
        adversary.below_k(figures, ours.known, K_GROUP, K_OFFICIAL),
        adversary.below_k(attacks["over time"], ours.known, K_GROUP, K_OFFICIAL),
        adversary.below_k(attacks["across"], ours.known, K_GROUP, K_OFFICIAL),
    )


def two_files(world: World, code: str) -> Findings:
    """Beyond the brief (row-level data never reaches an agency; each admin file must be
    k-anonymous on its own): what two admin ratings files, taken before and after one rating
    of the open month, would tell an agency that got both. Files stop at the last release."""
    ours = Adversary(code, [c.known for c in world.month.everyone])
    assert world.two_files is not None
    before, after, new = world.two_files
    equations = ours.row_differences(after.header, before.rows, after.rows, new)
    return judge(world, ours, adversary.small_cells(adversary.unique(equations)))


def judge(world: World, ours: Adversary, inferences: list[Inference]) -> Findings:
    truths = {c.id: c for c in world.month.everyone}
    return adversary.judge(inferences, truths, ours.known, K_GROUP, K_OFFICIAL)


def check_row_files(world: World) -> None:
    """The admin's row-level files: k-anonymous ratings, comments with agency and quarter only."""
    names = {f.name for f in world.files}
    assert {"ratings.csv", "comments.csv", "report.json"} <= names, (
        f"the row-level export is not the anonymised package yet: {sorted(names)}"
    )
    files = {f.name: f for f in world.files}
    assert files["report.json"].rows == [["True"]]
    ratings, comments = files["ratings.csv"], files["comments.csv"]
    smallest = adversary.smallest_combinations(ratings.header, ratings.rows, K_GROUP, K_OFFICIAL)
    assert smallest == [], f"combinations of quasi-identifiers below k: {smallest[:5]}"
    assert set(comments.header) - {"agency", "quarter"} == {"text"}, comments.header
    assert set(comments.header) & set(ratings.header) <= {"agency"}, "comments join ratings"
    assert not any(c in ratings.header for c in ("q_comment", "q_note", "q_c7_detail"))


async def _clients(stack: AsyncExitStack, runtime: Runtime, n: int) -> AsyncIterator[Any]:
    for _ in range(n):
        app = create_app(runtime, background=False)
        yield await stack.enter_async_context(TestClient(TestServer(app)))


async def test_the_agency_cannot_reidentify_a_rater(
    runtime: Runtime, client: TestClient[Any, Any]
) -> None:
    await adversary.add_agencies(runtime)
    await auth.create_user(runtime.sessions, "lan", PASSWORD, "admin")
    for code in AGENCIES:
        await auth.create_user(runtime.sessions, f"xem-{code}", PASSWORD, "viewer", code)
    async with AsyncExitStack() as stack:
        others = [code for code in AGENCIES if code != ADVERSARY]
        *clients, admin = [c async for c in _clients(stack, runtime, len(others) + 1)]
        viewers = {ADVERSARY: client, **dict(zip(others, clients, strict=True))}
        # Signed in once: sessions outlive the wipe between the two worlds.
        for user, signed in [*((f"xem-{c}", v) for c, v in viewers.items()), ("lan", admin)]:
            assert (await login(signed, user, PASSWORD)).status == 303

        # ---- protections on: the real system
        on = World(runtime, viewers, admin, True, adversary.month())
        await play(on)
        for code, snaps in on.snapshots.items():
            assert all(s.rows_status == 403 for s in snaps), f"{code}'s viewer got row-level data"
            for before, after in pairwise(snaps):
                changes = after.differences(before)
                if after.moment == "released":
                    assert changes, f"{code}: the release of October changed nothing"
                else:
                    assert changes == [], f"{code}: {before.moment} → {after.moment}: {changes}"
        check_row_files(on)
        outcomes_on = {code: attack(on, code) for code in AGENCIES}

        # ---- protections off: k = 1, live counts, rows as they are
        await adversary.wipe(runtime)
        settings = runtime.settings
        runtime.settings = settings.model_copy(update={"k_min_group": 1, "k_min_official": 1})
        try:
            off = World(runtime, viewers, admin, False, adversary.month())
            await play(off)
        finally:
            runtime.settings = settings
        outcomes_off = {code: attack(off, code) for code in AGENCIES}

    def total(outcomes: dict[str, Outcome]) -> int:
        return sum(len(o.findings.citizens) for o in outcomes.values())

    n_on, n_off = total(outcomes_on), total(outcomes_off)
    print(f"\nre-identification: protections off inferred {n_off} citizens, on {n_on}")
    for label, outcomes in (("off", outcomes_off), ("on", outcomes_on)):
        for code, o in outcomes.items():
            print(
                f"  {label} {code}: {o.findings.summary()}; "
                f"below k: {len(o.small_published)} published figures, "
                f"{len(o.small_differences)} differences over time, "
                f"{len(o.small_remainders)} remainders across granularities"
            )
    two = {code: len(two_files(on, code).citizens) for code in AGENCIES}
    print(f"  two admin ratings files around one rating: {two} raters exposed")
    homogeneous_on = sum(len(o.findings.homogeneous_groups) for o in outcomes_on.values())
    print(f"  homogeneous groups of k or more (a group fact, out of scope), on: {homogeneous_on}")
    for example in outcomes_off[ADVERSARY].findings.examples[:4]:
        print(f"  e.g. (off) {example}")

    assert n_off > 0, "the protections-off adversary learnt nothing: the test shows nothing"
    # Row-level files stop at the last released period: an open month never reaches them, so
    # two of them taken around one rating are the same rows.
    assert not any(two.values()), two
    problems = []
    for code, o in outcomes_on.items():
        if o.findings.citizens:
            problems.append(
                f"{code} re-identified {len(o.findings.citizens)}: {o.findings.examples}"
            )
        for name, small in (
            ("published figures", o.small_published),
            ("differences between two looks", o.small_differences),
            ("remainders across granularities", o.small_remainders),
        ):
            if small:
                problems.append(f"{code}: {name} over groups below k: {_cells(small)}")
    assert n_on == 0 and not problems, "\n".join(problems)


def _cells(equations: list[Equation]) -> list[str]:
    return sorted({f"{e.cell} ({len(e.members)} raters, {e.measure})" for e in equations})[:6]


def test_each_attack_finds_what_it_was_written_for() -> None:
    """The attacks on figures made up by hand, so a silent attack cannot pass for a safe system.

    Officials A (14 raters: 12 on procedure P, 2 on Q) and B (6 on P, 3 on Q).
    """
    day = dt.date(2026, 10, 5)
    a_p, a_q = range(1, 13), range(13, 15)
    b_p, b_q = range(15, 21), range(21, 24)
    known = {
        i: Known(i, ADVERSARY, official, procedure, day, "telegram", "vi", "mot-cua")
        for ids, official, procedure in (
            (a_p, "A", "P"),
            (a_q, "A", "Q"),
            (b_p, "B", "P"),
            (b_q, "B", "Q"),
        )
        for i in ids
    }
    satisfied = set(a_p) | set(b_p) | {21}  # A's two on Q and two of B's on Q are not

    def figure(members: range | set[int] | frozenset[int], cell: str) -> Equation:
        group = frozenset(members)
        return Equation("satisfied", group, len(group & satisfied), cell, "published")

    def exposed(inferences: list[Inference]) -> set[int]:
        truths = {i: _citizen(known[i], i in satisfied) for i in known}
        return adversary.judge(inferences, truths, known, K_GROUP, K_OFFICIAL).citizens

    # (a) a small cell: B's three on Q, one satisfied: nothing; B's six on P, all satisfied.
    assert exposed(adversary.small_cells([figure(b_q, "Q|B"), figure(b_p, "P|B")])) == set(b_p)
    # (b) one more rating of a cell: the difference is that rater.
    before, after = figure(set(b_p) - {20}, "x|B"), figure(b_p, "x|B")
    diff = adversary.differences_over_time([before], [after])
    assert [len(d.members) for d in diff] == [1] and exposed(adversary.small_cells(diff)) == {20}
    # (c) the agency minus official A: B's nine, 7 satisfied; minus procedure P: Q's 5, 1 of 5.
    everyone = figure(set(known), "m|agency|")
    parts = [
        everyone,
        figure(set(a_p) | set(a_q), "m|official|A"),
        figure(set(a_p) | set(b_p), "m|procedure|P"),
    ]
    rest = adversary.differences_across_granularities(parts)
    assert {len(e.members) for e in rest} >= {9, 5}
    assert exposed(adversary.small_cells(rest)) == set()
    # (e) P's 18 all satisfied (a group fact), taken out of A's 12 of 14: A's two on Q are not.
    learnt = adversary.small_cells(parts)
    chained = adversary.chaining(parts, learnt)
    assert exposed(chained) == set(a_q)


def _citizen(known: Known, satisfied: bool) -> Citizen:
    return Citizen(known, known.day, 5 if satisfied else 2, (), None, None, None)
