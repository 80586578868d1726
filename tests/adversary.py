"""The agency as an adversary: a realistic month, what the agency knows, and its attacks.

The agency (and the official being rated) knows, for every dossier, the citizen, the official,
the procedure, the day and the channel. To be on the safe side this adversary also knows *who
answered* (an official can simply ask, and the coverage page says how many did) and the day they
answered, so every published figure is, to it, a sum over citizens it can name. A figure is then
one linear equation over unknown answers: ``satisfied(c1) + … + satisfied(cn) = s``. That is the
whole model; each attack below only builds more equations (by subtracting published ones), and
an equation tells the agency a citizen's answer *with certainty* exactly when it is homogeneous:
its value is 0 (nobody) or n (everybody) once the answers it already knows are taken out.

The ground truth (what each citizen really answered) lives in ``Citizen``; the adversary only
ever sees ``Known`` (the quasi-identifiers) and what the dashboard and the exports show. Every
inference is checked against the ground truth, so a wrong model of the system fails loudly
instead of counting nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import re
import secrets
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select

from bot.flows.scoring import CIRCULAR_01_2018, DISSATISFIED_MAX_LEVEL, dossier_inputs
from bot.runtime import Runtime
from storage.models import (
    Agency,
    Answer,
    Official,
    Procedure,
    Release,
    ReleaseFigures,
    Response,
    SurveyLedger,
    answer_cell,
    new_id,
)
from storage.stats import NO_UNIT, Thresholds

MONTH = dt.date(2026, 10, 1)
ADVERSARY = "ubnd-an-khanh"
LEVELS = (5, 4, 3, 2, 1)
CLASSES = ("Xuất sắc", "Tốt", "Khá", "Trung bình", "Yếu")
CITIZEN_CRITERIA = ("3", "4", "6", "7")
PROCEDURES = {
    "1.001234": "Đăng ký khai sinh",
    "1.000894": "Đăng ký kết hôn",
    "2.000908": "Chứng thực bản sao từ bản chính",
    "1.004222": "Đăng ký thường trú",
    "1.003583": "Cấp giấy phép xây dựng",
    "1.000656": "Đăng ký khai tử",
}
#: Each procedure's field: justice groups four, so a field is a sum of procedures to subtract.
FIELD_OF = {
    "1.001234": "tu-phap",
    "1.000894": "tu-phap",
    "2.000908": "tu-phap",
    "1.004222": "cong-an",
    "1.003583": "xay-dung",
    "1.000656": "tu-phap",
}


# ------------------------------------------------------------------------------ the month
@dataclass(frozen=True)
class Desk:
    """One official's month: how many rated, what share was satisfied, which procedures."""

    official: str | None
    ratings: int
    satisfied_share: float
    procedures: tuple[tuple[str, int], ...]
    channels: tuple[tuple[str, int], ...] = (
        ("telegram", 45),
        ("zalo_oa", 30),
        ("zns", 15),
        ("web", 10),
    )


WEB_FIRST = (("web", 5), ("telegram", 4), ("zns", 1))
#: Unequal loads: three busy officials, eleven with 1 to 9 ratings, ratings with no official.
AGENCIES: dict[str, tuple[str, list[Desk]]] = {
    ADVERSARY: (
        "UBND phường An Khánh",
        [
            Desk("CB01", 40, 0.9, (("1.001234", 5), ("1.000894", 2), ("2.000908", 3))),
            Desk("CB02", 24, 0.75, (("2.000908", 4), ("1.004222", 1))),
            Desk("CB03", 16, 1.0, (("1.001234", 1),)),  # all satisfied: a group fact
            Desk("CB04", 9, 0.67, (("1.004222", 2), ("2.000908", 1))),
            Desk("CB05", 8, 0.0, (("1.000894", 1),)),  # all dissatisfied, below k
            Desk("CB06", 7, 1.0, (("1.001234", 1), ("1.000656", 1))),
            Desk("CB07", 6, 0.5, (("2.000908", 1),)),
            Desk("CB08", 5, 0.8, (("1.004222", 1), ("1.001234", 1))),
            Desk("CB09", 4, 0.75, (("1.000894", 1), ("2.000908", 1))),
            Desk("CB10", 3, 1.0, (("1.000656", 1),)),
            Desk("CB11", 2, 0.5, (("1.003583", 1), ("1.004222", 1))),
            Desk("CB12", 1, 0.0, (("1.003583", 1),)),  # the only rating of its official
            Desk(None, 3, 0.67, (("2.000908", 1),)),
        ],
    ),
    "ubnd-binh-trung": (
        "UBND phường Bình Trưng",
        [
            # Both of its procedures are BT01's alone: each is that official's figure too.
            Desk("BT01", 14, 0.85, (("1.001234", 6), ("2.000908", 1))),
            Desk("BT02", 6, 0.5, (("1.004222", 1),)),
            Desk("BT03", 4, 1.0, (("1.000656", 1),)),
        ],
    ),
    "so-tu-phap": (
        "Sở Tư pháp",
        [
            # A provincial department: its citizens use the portal; few get the ZNS template.
            Desk("TP01", 30, 0.8, (("2.000908", 3), ("1.000894", 1)), WEB_FIRST),
            Desk("TP02", 9, 0.67, (("1.003583", 1),), WEB_FIRST),
        ],
    ),
}
#: Ratings given one at a time during the last open days of the month (adversary's agency).
SINGLES = (
    "CB05", "CB12", "CB09", "CB01", "CB02", "CB05", "CB10", "CB04",
    "CB09", "CB07", "CB01", None, "CB11", "CB02", "CB06", "CB01",
)  # fmt: skip
#: Late ratings of the month, arriving after it was released.
LATE = ("CB01", "CB12", "CB06")

POSITIVE = (
    "Cán bộ hướng dẫn tận tình, dễ hiểu.",
    "Thủ tục nhanh gọn, trả kết quả đúng hẹn.",
    "Rất hài lòng với thái độ phục vụ.",
    "Nơi chờ sạch sẽ, có nước uống.",
    "Nộp trực tuyến tiện, không phải đi lại nhiều.",
)
NEGATIVE = (
    "Phải đi lại nhiều lần mới xong hồ sơ.",
    "Trả kết quả trễ hẹn mà không báo trước.",
    "Hướng dẫn chưa rõ, mỗi lần yêu cầu một giấy tờ khác.",
    "Chờ quá lâu, ít quầy tiếp nhận.",
)
DETAIL = (
    "Cán bộ nói chuyện khó nghe.",
    "Bị yêu cầu bổ sung giấy tờ không có trong danh mục.",
)


@dataclass(frozen=True)
class Known:
    """What the agency knows of one citizen who rated: everything but the answers."""

    id: int
    agency: str
    official: str | None
    procedure: str | None
    day: dt.date
    channel: str
    language: str
    survey: str

    @property
    def scored(self) -> bool:
        """Scored under Circular 01/2018 (the agency knows which survey a channel sends)."""
        return self.survey == "mot-cua"


@dataclass(frozen=True)
class Citizen:
    """The ground truth of one rating."""

    known: Known
    returned: dt.date
    satisfaction: int
    answers: tuple[tuple[str, Any, int | None, str | None], ...]
    criteria: dict[str, int] | None
    score_total: float | None
    score_band: str | None

    @property
    def id(self) -> int:
        return self.known.id

    @property
    def satisfied(self) -> bool:
        return self.satisfaction > DISSATISFIED_MAX_LEVEL

    @property
    def cells(self) -> dict[str, str]:
        """Each answer as the one text cell an export shows."""
        return {q: answer_cell(value, text) for q, value, _, text in self.answers}

    @property
    def texts(self) -> set[str]:
        return {text for _, _, _, text in self.answers if text}


@dataclass
class Month:
    """October 2026 (and a lighter September before it) for three agencies."""

    september: list[Citizen]
    october: list[Citizen]
    singles: list[Citizen]
    late: list[Citizen]
    #: October citizens who erase their answers after the release.
    erasures: list[Citizen]

    @property
    def everyone(self) -> list[Citizen]:
        return self.september + self.october + self.singles + self.late


def month(seed: int = 20261001) -> Month:
    """The same month for every run (and for both worlds of the test)."""
    rng = random.Random(seed)
    ids = iter(range(1, 100_000))
    september: list[Citizen] = []
    october: list[Citizen] = []
    for code, (_, desks) in AGENCIES.items():
        for desk in desks:
            for n, into, first, last in (
                (max(1, desk.ratings // 2), september, 1, 30),
                (desk.ratings, october, 1, 25),
            ):
                start = dt.date(2026, 10 if into is october else 9, 1)
                satisfied = round(desk.satisfied_share * n)
                procedures = _apportioned(desk.procedures, n)
                channels = _apportioned(desk.channels, n)
                rng.shuffle(procedures)
                rng.shuffle(channels)
                for i, (procedure, channel) in enumerate(zip(procedures, channels, strict=True)):
                    day = _weekday(rng, start, first, last)
                    into.append(
                        _citizen(rng, next(ids), code, desk, day, i < satisfied, procedure, channel)
                    )
    by_official = {d.official: d for d in AGENCIES[ADVERSARY][1]}
    singles = [
        _citizen(
            rng,
            next(ids),
            ADVERSARY,
            by_official[official],
            dt.date(2026, 10, 26 + i // 4),
            rng.random() < by_official[official].satisfied_share or rng.random() < 0.3,
        )
        for i, official in enumerate(SINGLES)
    ]
    late = [
        _citizen(rng, next(ids), ADVERSARY, by_official[o], dt.date(2026, 10, 31), True)
        for o in LATE
    ]
    ours = [c for c in october if c.known.agency == ADVERSARY]
    erasures = [
        next(c for c in ours if c.known.official == "CB08"),
        next(c for c in ours if c.known.official == "CB01"),
    ]
    return Month(september, october, singles, late, erasures)


def _apportioned(weights: Sequence[tuple[str, int]], n: int) -> list[str]:
    """``n`` procedures in proportion to their weights (largest remainders): the month's load."""
    total = sum(w for _, w in weights)
    exact = [(code, n * w / total) for code, w in weights]
    counts = {code: int(share) for code, share in exact}
    by_remainder = sorted(exact, key=lambda cs: cs[1] - int(cs[1]), reverse=True)
    for code, _ in by_remainder[: n - sum(counts.values())]:
        counts[code] += 1
    return [code for code, count in counts.items() for _ in range(count)]


def _weekday(rng: random.Random, start: dt.date, first: int, last: int) -> dt.date:
    while True:
        day = start.replace(day=rng.randint(first, last))
        if day.weekday() < 5:
            return day


def _citizen(
    rng: random.Random,
    cid: int,
    agency: str,
    desk: Desk,
    day: dt.date,
    satisfied: bool,
    procedure: str | None = None,
    channel: str | None = None,
) -> Citizen:
    if procedure is None:
        codes, weights = zip(*desk.procedures, strict=True)
        procedure = rng.choices(codes, weights)[0]
    if channel is None:
        names, shares = zip(*desk.channels, strict=True)
        channel = rng.choices(names, shares)[0]
    language = "en" if rng.random() < 0.04 else "vi"
    returned = max(day - dt.timedelta(days=rng.choice((0, 0, 0, 1))), day.replace(day=1))
    known = Known(
        cid,
        agency,
        desk.official,
        procedure,
        day,
        channel,
        language,
        "zns-5-star" if channel == "zns" else "mot-cua",
    )
    if known.survey == "zns-5-star":
        level = rng.choice((5, 4, 4, 3)) if satisfied else rng.choice((1, 2))
        answers: list[tuple[str, Any, int | None, str | None]] = [
            ("stars", str(level), level, None)
        ]
        if satisfied and rng.random() < 0.5:
            chips = sorted(rng.sample(["info", "dossier", "attitude", "time_cost"], 2))
            answers.append(("chips", chips, None, None))
        if rng.random() < 0.2:
            answers.append(("note", None, None, rng.choice(POSITIVE if satisfied else NEGATIVE)))
        return Citizen(known, returned, level, tuple(answers), None, None, None)
    good = (2, 2, 2, 2, 2, 1, 1, 0) if satisfied else (2, 1, 1, 0, 0, 0)
    points = {c: rng.choice(good) for c in CITIZEN_CRITERIA}
    values = {
        "3": {2: "0", 1: "1", 0: "2"},
        "4": {2: "none", 1: "desk", 0: "many"},
        "6": {2: "both", 1: "one", 0: "no"},
        "7": {2: "good", 1: "ok", 0: "bad"},
    }
    answers = [(f"c{c}", values[c][points[c]], points[c], None) for c in CITIZEN_CRITERIA]
    if points["7"] == 0 and rng.random() < 0.6:
        answers.append(("c7_detail", None, None, rng.choice(DETAIL)))
    level = rng.choice((5, 4)) if satisfied else 2
    overall = {5: ("rat_hai_long", 2), 4: ("hai_long", 1), 2: ("khong_hai_long", 0)}[level]
    answers.append(("overall", overall[0], overall[1], None))
    if rng.random() < 0.25:
        answers.append(("comment", None, None, rng.choice(POSITIVE if satisfied else NEGATIVE)))
    due = returned + dt.timedelta(days=rng.choice((-2, -1, 0, 1, 2, 3, 5)))
    score = CIRCULAR_01_2018.score(
        dossier_inputs(points, due, returned), Thresholds().bands_mot_cua
    )
    assert score is not None
    return Citizen(
        known,
        returned,
        level,
        tuple(answers),
        score.criteria,
        score.total,
        score.band,
    )


# ------------------------------------------------------------------------------ the store
async def add_agencies(runtime: Runtime) -> None:
    async with runtime.sessions() as session:
        for code, name in PROCEDURES.items():
            session.add(Procedure(code=code, name=name, field=FIELD_OF[code]))
        for code, (name, desks) in AGENCIES.items():
            agency = Agency(code=code, name=name)
            session.add(agency)
            await session.flush()
            for desk in desks:
                if desk.official is not None:
                    session.add(
                        Official(
                            agency_id=agency.id, code=desk.official, name=f"Cán bộ {desk.official}"
                        )
                    )
        await session.commit()


async def write(
    runtime: Runtime, citizens: Sequence[Citizen], unanswered: int = 0
) -> dict[int, str]:
    """Store the responses the way the bot does (plus the ledger rows); citizen → response id.

    ``unanswered`` more dossiers per agency were reported but never answered (coverage).
    """
    stored: dict[int, str] = {}
    async with runtime.sessions() as session:
        agencies = {a.code: a.id for a in (await session.execute(select(Agency))).scalars()}
        officials = {
            (o.agency_id, o.code): o.id for o in (await session.execute(select(Official))).scalars()
        }
        procedures = {p.code: p.id for p in (await session.execute(select(Procedure))).scalars()}
        answers: list[Answer] = []
        for citizen in citizens:
            k = citizen.known
            agency_id = agencies[k.agency]
            response = Response(
                id=new_id(),
                agency_id=agency_id,
                official_id=officials.get((agency_id, k.official or "")),
                procedure_id=procedures.get(k.procedure or ""),
                survey_id=k.survey,
                survey_version=1,
                channel=k.channel,
                language=k.language,
                answered_on=k.day,
                rater_hash=secrets.token_hex(32),
                rater_key_id="test",
                complete=True,
                satisfaction=citizen.satisfaction,
                criteria=citizen.criteria,
                score_total=citizen.score_total,
                score_maximum=CIRCULAR_01_2018.maximum,
                score_band=citizen.score_band,
                score_scheme=CIRCULAR_01_2018.id,
            )
            session.add(response)
            answers += [response.record_answer(q, v, p, t) for q, v, p, t in citizen.answers]
            session.add(_ledger(agency_id, citizen.returned, k.channel, True))
            stored[citizen.id] = response.id
        await session.flush()  # the responses first: nothing orders the answer rows after them
        session.add_all(answers)
        for agency_id in agencies.values() if unanswered else ():
            for i in range(unanswered):
                day = MONTH + dt.timedelta(days=i % 28)
                session.add(_ledger(agency_id, day, ("telegram", "zalo_oa", None)[i % 3], False))
        await session.commit()
    return stored


def _ledger(agency_id: str, day: dt.date, channel: str | None, completed: bool) -> SurveyLedger:
    return SurveyLedger(
        agency_id=agency_id,
        dossier_hash=secrets.token_hex(32),
        dossier_key_id="test",
        survey_id="mot-cua",
        reported_on=day,
        status="completed" if completed else "expired",
        channel=channel,
        delivered=channel is not None,
        completed=completed,
    )


async def erase(runtime: Runtime, response_id: str) -> None:
    """What the citizen's /delete does to what they answered."""
    async with runtime.sessions() as session:
        await session.execute(delete(Answer).where(Answer.response_id == response_id))
        await session.execute(delete(Response).where(Response.id == response_id))
        await session.commit()


async def wipe(runtime: Runtime) -> None:
    """Forget every response, ledger row and release (agencies and users stay)."""
    async with runtime.sessions() as session:
        for model in (ReleaseFigures, Release, Answer, Response, SurveyLedger):
            await session.execute(delete(model))
        await session.commit()


# ------------------------------------------------------------------------------ snapshots
CSRF = re.compile(r'name="csrf" value="[^"]*"')
PAGES = ("/admin/", "/admin/ranking", "/admin/officials", "/admin/procedures", "/admin/fields",
         "/admin/criteria", "/admin/coverage", "/admin/exports")  # fmt: skip
FIGURE_PAGES = PAGES[:-2]
AGGREGATE_LEVELS = ("agency", "official", "procedure", "field", "criterion", "field_criterion",
                    "period")  # fmt: skip


@dataclass
class Snapshot:
    """Everything the viewer could see at one moment, and whom the agency knew had rated."""

    moment: str
    pages: dict[str, str]
    exports: dict[str, str]
    #: Status of the row-level download (403 for a viewer).
    rows_status: int
    #: Per release label: the agency's citizens whose ratings the release counted.
    raters: dict[str, frozenset[int]]

    def differences(self, other: Snapshot) -> list[str]:
        keys = sorted(set(self.pages) | set(other.pages))
        changed = [k for k in keys if self.pages.get(k) != other.pages.get(k)]
        names = sorted(set(self.exports) | set(other.exports))
        return changed + [n for n in names if self.exports.get(n) != other.exports.get(n)]


async def login(client: Any, username: str, password: str) -> Any:
    """Sign in over HTTP the way a browser does (login form, its CSRF token, then the POST)."""
    form = await client.get("/admin/login")
    token = csrf_of(await form.text())
    return await client.post(
        "/admin/login",
        data={"csrf": token, "username": username, "password": password},
        allow_redirects=False,
    )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def normalised(html: str) -> str:
    """A page without what legitimately differs between two looks: only the session's CSRF
    token (everything else on a page comes from the releases or the fixed settings)."""
    return CSRF.sub('name="csrf" value=""', html)


async def snapshot(
    client: Any, moment: str, raters: Mapping[str, frozenset[int]], pages_too: bool = True
) -> Snapshot:
    """Every page and every aggregate export (CSV), for the latest release and each older one
    (``pages_too`` False: the exports only, e.g. an admin's, province-wide)."""
    pages: dict[str, str] = {}
    exports_page = await client.get("/admin/exports")
    assert exports_page.status == 200
    html = await exports_page.text()
    csrf = csrf_of(html)
    pages["/admin/exports"] = normalised(html)
    labels = re.findall(r'<option value="([^"]+)">\1</option>', _release_select(html))
    older = labels[1:]
    paths = PAGES[:-1] + tuple(f"{p}?release={r}" for r in older for p in FIGURE_PAGES)
    for path in paths if pages_too else ():
        response = await client.get(path)
        assert response.status == 200, path
        pages[path] = normalised(await response.text())
    exports: dict[str, str] = {}
    for level in AGGREGATE_LEVELS:
        for label in ("", *(older if level != "period" else ())):
            response = await client.post(
                "/admin/exports/download",
                data={"csrf": csrf, "level": level, "format": "csv", "release": label},
            )
            assert response.status == 200, (level, label, await response.text())
            exports[f"{level}@{label or 'latest'}"] = (await response.read()).decode("utf-8-sig")
    rows = await client.post(
        "/admin/exports/download",
        data={"csrf": csrf, "level": "responses", "format": "csv", "period": "day"},
    )
    return Snapshot(moment, pages, exports, rows.status, dict(raters))


def _release_select(html: str) -> str:
    found = re.search(r'data-testid="export-release">(.*?)</select>', html, re.S)
    return found.group(1) if found else ""


# ------------------------------------------------------------------------------ equations
@dataclass(frozen=True)
class Equation:
    """``sum(indicator(c, measure) for c in members) == value``, as the agency can write it.

    ``measure`` names a 0/1 fact about a citizen: ``satisfied``, ``level=4``, ``class=Tốt``,
    ``crit3=0`` (criterion 3 scored 0 points), ``dis&crit3=0``, or a row-level column value
    such as ``q_c7=bad`` or ``comment=<text>``.
    """

    measure: str
    members: frozenset[int]
    value: int
    cell: str
    attack: str

    def minus(self, inner: Equation, cell: str, attack: str) -> Equation:
        """This figure minus one over a subset of its members: the figure of the rest."""
        return Equation(
            self.measure, self.members - inner.members, self.value - inner.value, cell, attack
        )


@dataclass(frozen=True)
class Inference:
    """One citizen's fact learnt with certainty, and the group it was learnt from."""

    citizen: int
    measure: str
    bit: int
    group: frozenset[int]
    attack: str
    #: The figure it was read from.
    source: str = ""


class Adversary:
    """The adversary: one agency's knowledge of whom it served, and how it reads figures."""

    def __init__(self, code: str, known: Iterable[Known]) -> None:
        self.code = code
        self.known = {k.id: k for k in known if k.agency == code}

    def group(self, raters: frozenset[int], level: str, unit: str | None = None) -> frozenset[int]:
        """The citizens a published cell counts, as the agency can list them."""
        members = [self.known[i] for i in raters if i in self.known]
        value = None if unit == NO_UNIT else unit
        if level == "official":
            members = [k for k in members if k.official == value]
        elif level == "procedure":
            members = [k for k in members if k.procedure == value]
        elif level == "field":
            members = [k for k in members if FIELD_OF.get(k.procedure or "") == value]
        elif level == "scored":
            members = [k for k in members if k.scored]
        return frozenset(k.id for k in members)

    # -------------------------------------------------------------------- reading
    def read(self, snap: Snapshot) -> list[Equation]:
        """Every figure of one snapshot, pages and exports, as equations."""
        found: list[Equation] = []
        for name, text in snap.exports.items():
            found += self._export(name.split("@")[0], text, snap.raters)
        for path, html in snap.pages.items():
            found += self._page(path, html, snap.raters)
        return found

    def _cell(
        self, raters: frozenset[int], label: str, level: str, unit: str, rated: int, satisfied: int
    ) -> Equation:
        members = self.group(raters, level, unit)
        # The adversary's model of the system must hold, or its counts mean nothing.
        assert rated == len(members), f"{label} {level} {unit}: {rated} rated, {len(members)} known"
        return Equation("satisfied", members, satisfied, f"{label}|{level}|{unit}", "published")

    def _export(
        self, level: str, text: str, raters: Mapping[str, frozenset[int]]
    ) -> list[Equation]:
        found = []
        for row in csv.DictReader(io.StringIO(text)):
            label = row["release"]
            who = raters[label]
            if level in ("criterion", "field_criterion"):
                if row["agency"] != self.code or row["scored"] == "":
                    continue
                found += self._criterion(
                    who,
                    label,
                    row["criterion"],
                    int(row["scored"]),
                    float(row["zero_pct"]),
                    _float(row["zero_pct_dissatisfied"]),
                    _int(row["dissatisfied"]),
                    row["field"].removeprefix("'") or None,
                )
                continue
            if row["agency"] != self.code or row["satisfied"] == "":
                continue
            if level in ("agency", "period"):
                found.append(
                    self._cell(who, label, "agency", "", int(row["rated"]), int(row["satisfied"]))
                )
            else:
                # Cells are neutralised against formulas: the "-" of no unit comes as "'-".
                unit = row["unit"].removeprefix("'")
                found.append(
                    self._cell(who, label, level, unit, int(row["rated"]), int(row["satisfied"]))
                )
        return found

    def _criterion(
        self,
        raters: frozenset[int],
        label: str,
        criterion: str,
        scored: int,
        zero_pct: float,
        zero_dis_pct: float | None,
        dissatisfied: int | None,
        field: str | None = None,
    ) -> list[Equation]:
        members = self.group(raters, "scored")
        if field is not None:
            members &= self.group(raters, "field", field)
        assert scored == len(members), f"{label} criterion {criterion} {field}: {scored} scored"
        cell = f"{label}|criterion|{criterion}" + (f"|{field}" if field else "")
        found = []
        if criterion in CITIZEN_CRITERIA:
            zeros = round(zero_pct * scored / 100)
            found.append(Equation(f"crit{criterion}=0", members, zeros, cell, "published"))
        if dissatisfied is not None and zero_dis_pct is not None:
            found.append(Equation("satisfied", members, scored - dissatisfied, cell, "published"))
            if criterion in CITIZEN_CRITERIA:
                both = round(zero_dis_pct * dissatisfied / 100)
                found.append(Equation(f"dis&crit{criterion}=0", members, both, cell, "published"))
        return found

    def _page(self, path: str, html: str, raters: Mapping[str, frozenset[int]]) -> list[Equation]:
        shown = re.search(r"Số liệu kỳ (\S+) \(", html)
        if shown is None:
            return []
        label = shown.group(1)
        who = raters[label]
        found: list[Equation] = []
        base = path.split("?")[0]
        if base == "/admin/":
            found += self._overview(html, who, label, raters)
        elif base in ("/admin/officials", "/admin/procedures", "/admin/fields", "/admin/ranking"):
            level = {
                "/admin/officials": "official",
                "/admin/procedures": "procedure",
                "/admin/fields": "field",
            }.get(base, "agency")
            for unit, row in _rows(html, "data-unit"):
                rated, rate = _num(_k(row, "rated")), _pct(_k(row, "rate"))
                if rated is None or rate is None:
                    continue
                satisfied = round(rate * rated / 100)
                if level == "agency":
                    if unit == self.code:
                        found.append(self._cell(who, label, "agency", "", rated, satisfied))
                else:
                    found.append(self._cell(who, label, level, unit, rated, satisfied))
        elif base == "/admin/criteria":
            for key, row in _rows(html, "data-criterion"):
                scored, zero = _num(_k(row, "scored")), _pct(_k(row, "zero"))
                if scored is None or zero is None:
                    continue
                found += self._criterion(who, label, key.split(":")[1], scored, zero, None, None)
        if base == "/admin/fields":
            for key, row in _rows(html, "data-criterion"):
                scored, zero = _num(_k(row, "scored")), _pct(_k(row, "zero"))
                if scored is None or zero is None:
                    continue
                field, _, criterion = key.split(":")
                found += self._criterion(who, label, criterion, scored, zero, None, None, field)
        return found

    def _overview(
        self, html: str, who: frozenset[int], label: str, raters: Mapping[str, frozenset[int]]
    ) -> list[Equation]:
        found: list[Equation] = []
        rated = _num(_testid(html, "total-rated"))
        rate = _pct(_testid(html, "total-rate"))
        if rated is None or rate is None:
            return found
        found.append(self._cell(who, label, "agency", "", rated, round(rate * rated / 100)))
        everyone, scored = self.group(who, "agency"), self.group(who, "scored")
        cell = f"{label}|agency|"
        for level in LEVELS:
            count = _num(_between(html, f'data-level="{level}">', "<"))
            if count is not None:
                found.append(Equation(f"level={level}", everyone, count, cell, "published"))
        for level in (1, 3):
            # Known before looking: the mot-cua survey has no level 1 or 3, only ZNS stars do.
            found.append(Equation(f"level={level}", scored, 0, f"{cell}mot-cua", "prior"))
        for name, row in _rows(html, "data-band"):
            count = _num(_between(row, '<td class="n">', "<"))
            if count is not None:
                found.append(Equation(f"class={name}", scored, count, cell, "published"))
        for period, row in _rows(html, "data-period"):
            cells = re.findall(r"<td>([^<]*)</td>", row)
            trend_rated, trend_rate = _num(cells[1]), _pct(cells[2])
            if trend_rated is not None and trend_rate is not None:
                found.append(
                    self._cell(
                        raters[period],
                        period,
                        "agency",
                        "",
                        trend_rated,
                        round(trend_rate * trend_rated / 100),
                    )
                )
        return found

    # -------------------------------------------------------------------- row-level files
    def rows(
        self,
        header: Sequence[str],
        rows: Iterable[Sequence[str]],
        raters: frozenset[int],
        attack: str = "row linkage",
    ) -> list[Equation]:
        """Attack (d), row linkage, on a ratings file: one equation per combination of
        quasi-identifiers that the agency can pin to a set of citizens.

        A row matches a citizen when each of its quasi-identifiers is the citizen's value, or a
        generalised one that covers it ("*", "(other officials)" = an official no row of the file
        names). When a combination has as many rows as citizens match it, those citizens are
        exactly its raters, and each value of each answer column is counted over them.
        """
        combos, named = self._combinations(header, rows)
        found = []
        for combo, members_rows in combos.items():
            match = self._matching(combo, named, raters)
            if len(match) != len(members_rows):
                continue  # some matching citizens' rows are elsewhere (or dropped): no equation
            found += _row_equations(header, members_rows, match, "rows|" + "|".join(combo), attack)
        return found

    def row_differences(
        self,
        header: Sequence[str],
        before: Iterable[Sequence[str]],
        after: Iterable[Sequence[str]],
        new: frozenset[int],
    ) -> list[Equation]:
        """Attack (b) on two ratings files, one taken before and one after some citizens rated
        (the agency knows who). Pseudonyms are re-keyed and rows shuffled, so rows cannot be
        joined; but a combination's rows are a multiset of answers, and what the second file's
        combination holds beyond the first's are the new raters' rows. Sound only when the
        generalisation did not change between the files (every old row is still there)."""
        old, _ = self._combinations(header, before)
        fresh, named = self._combinations(header, after)
        key = [i for i, name in enumerate(header) if name != "response"]
        bags = {c: Counter(tuple(r[i] for i in key) for r in rs) for c, rs in fresh.items()}
        if any(
            Counter(tuple(r[i] for i in key) for r in rs) - bags.get(c, Counter())
            for c, rs in old.items()
        ):
            return []  # the file was generalised otherwise: no row-for-row comparison
        found = []
        for combo, bag in bags.items():
            added = bag - Counter(tuple(r[i] for i in key) for r in old.get(combo, []))
            if not added:
                continue
            members = self._matching(combo, named, new)
            rows = [_unkeyed(header, values) for values, n in added.items() for _ in range(n)]
            if len(members) == len(rows):
                cell = "rows|" + "|".join(combo) + " (difference)"
                found += _row_equations(header, rows, members, cell, "row differencing")
        return found

    def _combinations(
        self, header: Sequence[str], rows: Iterable[Sequence[str]]
    ) -> tuple[dict[tuple[str, ...], list[Sequence[str]]], dict[str, set[str]]]:
        """The agency's rows of a file by combination of quasi-identifiers, and the values the
        file names in each quasi-identifier column."""
        index = {name: i for i, name in enumerate(header)}
        mine = [r for r in rows if r[index["agency"]] == self.code]
        named: dict[str, set[str]] = defaultdict(set)
        combos: dict[tuple[str, ...], list[Sequence[str]]] = defaultdict(list)
        for row in mine:
            combo = tuple(row[index[c]] if c in index else "*" for c in QUASI)
            combos[combo].append(row)
            for column, value in zip(QUASI, combo, strict=True):
                named[column].add(value)
        return combos, named

    def _matching(
        self, combo: tuple[str, ...], named: dict[str, set[str]], raters: frozenset[int]
    ) -> frozenset[int]:
        return frozenset(
            k.id
            for k in (self.known[i] for i in raters if i in self.known)
            if all(_covers(v, c, k, named[c]) for c, v in zip(QUASI, combo, strict=True))
        )

    def comments(
        self, header: Sequence[str], rows: Iterable[Sequence[str]], raters: frozenset[int]
    ) -> list[Equation]:
        """Attack (d) on a comments file: a comment's group is every rater of its agency and
        period (the agency cannot tell who wrote one), so a comment is attributed only when
        its group is one citizen, or all of its group wrote that very text."""
        index = {name: i for i, name in enumerate(header)}
        text_column = next(
            n for n in header if n not in ("agency", "period", "quarter", "survey", "question")
        )
        groups: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            if row[index["agency"]] == self.code:
                period = next((row[index[c]] for c in ("period", "quarter") if c in index), "*")
                groups[period].append(row[index[text_column]])
        found = []
        for period, texts in groups.items():
            members = frozenset(
                i for i in raters if i in self.known and _in_period(self.known[i].day, period)
            )
            counts: dict[str, int] = defaultdict(int)
            for text in texts:
                counts[text] += 1
            for text, n in counts.items():
                found.append(
                    Equation(f"comment={text}", members, n, f"comments|{period}", "row linkage")
                )
        return found


QUASI = ("official", "procedure", "field", "channel", "language", "period", "survey")


def _unkeyed(header: Sequence[str], values: Iterable[str]) -> list[str]:
    """A row without its pseudonym back in the header's shape."""
    rest = iter(values)
    return ["" if name == "response" else next(rest) for name in header]


def _row_equations(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    members: frozenset[int],
    cell: str,
    attack: str,
) -> list[Equation]:
    """Each answer value's count over rows known to be exactly ``members``' rows."""
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        for name, value in zip(header, row, strict=True):
            measure = _row_measure(name, value)
            if measure is not None:
                counts[measure] += 1
            if name == "satisfaction" and value:
                counts["satisfied"] += int(value) > DISSATISFIED_MAX_LEVEL
    return [Equation(m, members, value, cell, attack) for m, value in counts.items()]


#: ``score_maximum`` is the scheme's constant beside every total: it tells nothing the total does not.
NOT_ANSWERS = {
    "response", "agency", "survey", "survey_version", "complete", "score_maximum", *QUASI
}  # fmt: skip


def _row_measure(column: str, value: str) -> str | None:
    if column in NOT_ANSWERS:
        return None
    if column == "satisfaction":
        return f"level={value}" if value else None
    if column == "score_band":
        return f"class={value}" if value else None
    return f"{column}={value}"


def _covers(value: str, column: str, k: Known, named: set[str]) -> bool:
    """Whether a row's released value can be this citizen's."""
    if column == "field":
        return value == "*" or FIELD_OF.get(k.procedure or "", "") == value
    if value == "*" or value == "":
        return value == "*" or getattr(k, column, None) in (None, "")
    if value.startswith("(other"):
        # Every row of a rare value shows "(other …)": it is a value no row names (never none).
        mine = getattr(k, column)
        return mine is not None and mine not in named
    if column == "period":
        return _in_period(k.day, value)
    return bool(getattr(k, column) == value)


def _in_period(day: dt.date, label: str) -> bool:
    """Whether ``day`` lies in a released period label (day, ISO week, month, quarter, year)."""
    if label in ("*", ""):
        return True
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", label):
        return day.isoformat() == label
    if re.fullmatch(r"\d{4}-W\d{2}", label):
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}" == label
    if re.fullmatch(r"\d{4}-Q\d", label):
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}" == label
    if re.fullmatch(r"\d{4}-\d{2}", label):
        return day.isoformat()[:7] == label
    return str(day.year) == label


def _rows(html: str, attribute: str) -> list[tuple[str, str]]:
    return re.findall(rf'<tr {attribute}="([^"]*)"(.*?)</tr>', html, re.S)


def _k(row: str, key: str) -> str:
    return _between(row, f'data-k="{key}">', "<")


def _testid(html: str, name: str) -> str:
    return _between(html, f'data-testid="{name}">', "<")


def _between(text: str, start: str, end: str) -> str:
    at = text.find(start)
    if at < 0:
        return ""
    at += len(start)
    return text[at : text.find(end, at)]


def _num(text: str) -> int | None:
    """A Vietnamese-formatted integer ("1.234"), or None for a withheld one."""
    text = text.strip().replace(".", "")
    return int(text) if text.isdigit() else None


def _pct(text: str) -> float | None:
    """A Vietnamese-formatted percentage ("85,0 %"), or None for a withheld one."""
    text = text.strip().removesuffix("%").strip().replace(".", "").replace(",", ".")
    try:
        return float(text)
    except ValueError:
        return None


def _int(text: str) -> int | None:
    return int(text) if text != "" else None


def _float(text: str) -> float | None:
    return float(text) if text != "" else None


# ------------------------------------------------------------------------------ attacks
def small_cells(equations: Iterable[Equation]) -> list[Inference]:
    """Attack (a). A published figure about a group the agency can list tells it every member's
    answer when the figure is 0 or the group's size: 0 of 3 satisfied, 1 of 1, a level counted
    for all 7. (For a group of k or more this is homogeneity, a group fact by the threat model;
    the findings count it apart.)"""
    found = []
    for eq in equations:
        if eq.members and eq.value in (0, len(eq.members)):
            bit = 1 if eq.value else 0
            found += [
                Inference(c, eq.measure, bit, eq.members, eq.attack, eq.cell) for c in eq.members
            ]
    return found


def differences_over_time(before: Iterable[Equation], after: Iterable[Equation]) -> list[Equation]:
    """Attack (b). The same cell seen twice: if the second counts the first's citizens plus a
    few new ones (or minus an erased one), subtracting gives the new raters' own figure, however
    large the cell. Frozen releases make the two looks equal; live counts give it away."""
    earlier: dict[tuple[str, str], Equation] = {(e.cell, e.measure): e for e in before}
    found = []
    for late in after:
        early = earlier.get((late.cell, late.measure))
        if early is None or early.members == late.members:
            continue
        if early.members < late.members:
            big, small = late, early
        elif late.members < early.members:
            big, small = early, late
        else:
            continue
        found.append(big.minus(small, f"{late.cell} (difference)", "differencing over time"))
    return found


def differences_across_granularities(equations: Sequence[Equation]) -> list[Equation]:
    """Attack (c). Within one snapshot: a total minus its published parts is the figure of the
    withheld parts (agency minus its officials, or its procedures); and any figure minus a
    published figure over a subset of its citizens (the agency's satisfied count minus the
    criteria's, which count only scored surveys) is the figure of the rest."""
    found = []
    by_cell: dict[tuple[str, str], Equation] = {(e.cell, e.measure): e for e in equations}
    for (cell, measure), total in by_cell.items():
        label, level, _ = cell.split("|", 2) if cell.count("|") >= 2 else (cell, "", "")
        if level == "field":
            # A field minus its published procedures: the field's withheld procedures.
            field = cell.split("|", 2)[2]
            part_levels: tuple[str, ...] = ("procedure",)
        elif level == "agency":
            field, part_levels = "", ("official", "procedure", "field")
        else:
            continue
        for part_level in part_levels:
            parts = [
                e
                for (c, m), e in by_cell.items()
                if m == measure
                and c.startswith(f"{label}|{part_level}|")
                and (not field or FIELD_OF.get(c.split("|", 2)[2]) == field)
            ]
            covered = frozenset().union(*(p.members for p in parts)) if parts else frozenset()
            rest = total.members - covered
            if parts and rest and covered <= total.members:
                value = total.value - sum(p.value for p in parts)
                found.append(
                    Equation(
                        measure,
                        rest,
                        value,
                        f"{cell} minus {part_level}s",
                        "differencing across granularities",
                    )
                )
    pool = list(by_cell.values()) + found
    by_measure: dict[str, list[Equation]] = defaultdict(list)
    for eq in pool:
        by_measure[eq.measure].append(eq)
    for same in by_measure.values():
        for big in same:
            for small in same:
                if small.members < big.members:
                    cell = f"{big.cell} minus {small.cell}"
                    found.append(big.minus(small, cell, "differencing across granularities"))
    return found


def chaining(equations: Sequence[Equation], learnt: Iterable[Inference]) -> list[Inference]:
    """Attack (e). Take what is already known out of every equation: what remains is a smaller
    group's figure, which may be homogeneous. A procedure whose 15 raters were all satisfied,
    taken out of an official's 12 of 14, leaves the official's two other raters, both unhappy.
    Repeated until nothing new is learnt."""
    known: dict[tuple[int, str], int] = {}
    for inference in learnt:
        for citizen, measure, bit in _with_implied(inference):
            known.setdefault((citizen, measure), bit)
    found: list[Inference] = []
    progress = True
    while progress:
        progress = False
        for eq in equations:
            unknown = [c for c in eq.members if (c, eq.measure) not in known]
            if not unknown:
                continue
            rest = eq.value - sum(
                known[(c, eq.measure)] for c in eq.members if (c, eq.measure) in known
            )
            assert 0 <= rest <= len(unknown), f"inconsistent figures: {eq}"
            if rest not in (0, len(unknown)):
                continue
            group = frozenset(unknown)
            for citizen in unknown:
                inference = Inference(
                    citizen, eq.measure, 1 if rest else 0, group, "chaining", eq.cell
                )
                found.append(inference)
                for c, m, b in _with_implied(inference):
                    known.setdefault((c, m), b)
            progress = True
    return found


def _with_implied(i: Inference) -> list[tuple[int, str, int]]:
    """A fact and what follows from it (a level gives satisfaction and excludes other levels)."""
    facts = [(i.measure, i.bit)]
    name, _, value = i.measure.partition("=")
    if name == "level" and i.bit:
        facts += [("satisfied", int(int(value) > DISSATISFIED_MAX_LEVEL))]
        facts += [(f"level={other}", 0) for other in LEVELS if str(other) != value]
    elif i.measure == "satisfied":
        facts += [
            (f"level={lv}", 0) for lv in LEVELS if (lv > DISSATISFIED_MAX_LEVEL) != bool(i.bit)
        ]
    elif name == "class" and i.bit:
        facts += [(f"class={other}", 0) for other in CLASSES if other != value]
    elif name.startswith("dis&") and i.bit:
        facts += [("satisfied", 0), (f"{name[4:]}=0", 1)]
    return [(i.citizen, m, b) for m, b in facts]


# ------------------------------------------------------------------------------ findings
def truth(citizen: Citizen, measure: str) -> int:
    """The ground truth of one 0/1 fact (to check that every inference is right)."""
    name, _, value = measure.partition("=")
    if measure == "satisfied":
        return int(citizen.satisfied)
    if name == "level":
        return int(str(citizen.satisfaction) == value)
    if name == "class":
        return int(citizen.score_band == value)
    if name.startswith("dis&crit"):
        return int(not citizen.satisfied and (citizen.criteria or {}).get(name[8:]) == 0)
    if name.startswith("crit"):
        return int((citizen.criteria or {}).get(name[4:]) == 0)
    if name == "comment":
        return int(value in citizen.texts)
    if name == "score_total":
        return int(citizen.score_total == (float(value) if value else None))
    if name.startswith("q_"):
        return int(citizen.cells.get(name[2:], "") == value)
    raise AssertionError(f"unknown measure {measure}")


def is_fact(inference: Inference) -> bool:
    """Whether an inference tells an answer outright: a 1, or either value of a yes/no fact
    (satisfied or not, a criterion at 0 points or not). "Not level 4" alone is not an answer."""
    return (
        bool(inference.bit)
        or inference.measure == "satisfied"
        or inference.measure.startswith("crit")
    )


@dataclass
class Findings:
    """What one adversary learnt, split by whether the group it came from was below k."""

    #: attack → citizens whose answer was learnt from a group below its k.
    exposed: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    #: attack → groups of k or more that were homogeneous (a group fact, out of scope).
    homogeneous: dict[str, set[frozenset[int]]] = field(default_factory=lambda: defaultdict(set))
    examples: list[str] = field(default_factory=list)

    @property
    def citizens(self) -> set[int]:
        return set().union(*self.exposed.values()) if self.exposed else set()

    @property
    def homogeneous_groups(self) -> set[frozenset[int]]:
        return set().union(*self.homogeneous.values()) if self.homogeneous else set()

    def summary(self) -> str:
        attacks = sorted(set(self.exposed) | set(self.homogeneous))
        return "; ".join(
            f"{a}: {len(self.exposed.get(a, ()))} exposed, "
            f"{len(self.homogeneous.get(a, ()))} homogeneous groups >= k"
            for a in attacks
        )


def judge(
    inferences: Iterable[Inference],
    truths: Mapping[int, Citizen],
    known: Mapping[int, Known],
    k_group: int,
    k_official: int,
) -> Findings:
    """Check every inference against the truth, then sort them by the size of their group."""
    findings = Findings()
    for inference in inferences:
        citizen = truths[inference.citizen]
        assert truth(citizen, inference.measure) == inference.bit, f"wrong inference {inference}"
        if not is_fact(inference):
            continue
        officials = {known[c].official for c in inference.group}
        k = k_official if len(officials) == 1 and None not in officials else k_group
        if len(inference.group) < k:
            if (
                inference.citizen not in findings.exposed[inference.attack]
                and len(findings.examples) < 8
            ):
                findings.examples.append(
                    f"{inference.attack}: citizen {inference.citizen} {inference.measure}"
                    f"={inference.bit} from a group of {len(inference.group)} ({inference.source})"
                )
            findings.exposed[inference.attack].add(inference.citizen)
        else:
            findings.homogeneous[inference.attack].add(inference.group)
    return findings


def below_k(
    equations: Iterable[Equation], known: Mapping[int, Known], k_group: int, k_official: int
) -> list[Equation]:
    """Figures (published, or differences of two looks) whose group is below its k, whatever
    they reveal."""
    small = []
    for eq in equations:
        officials = {known[c].official for c in eq.members}
        k = k_official if len(officials) == 1 and None not in officials else k_group
        if len(eq.members) < k:
            small.append(eq)
    return small


def unique(equations: Iterable[Equation]) -> list[Equation]:
    """One equation per (measure, citizens); two figures for the same must agree."""
    seen: dict[tuple[str, frozenset[int]], Equation] = {}
    for eq in equations:
        key = (eq.measure, eq.members)
        other = seen.get(key)
        if other is None:
            seen[key] = eq
        else:
            assert other.value == eq.value, f"two figures for one group disagree: {other} / {eq}"
    return list(seen.values())


def smallest_combinations(
    header: Sequence[str], rows: Iterable[Sequence[str]], k_group: int, k_official: int
) -> list[tuple[tuple[str, ...], int]]:
    """Combinations of quasi-identifiers of a ratings file holding fewer rows than their k
    (an official's k where the official column names one)."""
    index = {name: i for i, name in enumerate(header)}
    columns = ["agency", *(c for c in (*QUASI, "survey_version") if c in index)]
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    for row in rows:
        counts[tuple(row[index[c]] for c in columns)] += 1
    small = []
    for combo, n in counts.items():
        official = combo[columns.index("official")] if "official" in columns else "*"
        named = official not in ("", "*") and not official.startswith("(other")
        if n < (max(k_group, k_official) if named else k_group):
            small.append((combo, n))
    return small
