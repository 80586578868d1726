"""SQLAlchemy models, split into three stores that must never be joinable on a citizen.

* Reference data: agencies, their API keys (hashed), officials, procedures.
* Operational store (who was asked): dossiers, invitations, outbox, opt-outs. Rows that can reach
  a citizen (sealed addresses, contact pseudonyms, the link to an in-progress response) are purged
  when the survey closes; what stays is the ``survey_ledger`` (which dossier was surveyed, whether
  it was completed) keyed by a dossier pseudonym.
* Confidential store (what was answered): responses and answers. A response has a random id
  (never sequential), a day-level date and a rater pseudonym under its own key, and nothing that
  names a dossier.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def new_id() -> str:
    """Random ids everywhere: an id must not reveal the order in which citizens answered."""
    return uuid.uuid4().hex


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC on both SQLite (which drops tzinfo) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC) if value is not None else None

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON()}


# --- reference data --------------------------------------------------------------------------
class Agency(Base):
    """A unit of the province's tree (``storage.units``): the province itself, a department, a
    district, a commune or ward, a one-stop desk. ``parent_id`` None is a root; every figure of a
    unit is rolled up to each of its ancestors in the releases."""

    __tablename__ = "agency"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("agency.id"), index=True)
    #: One of ``storage.units.KINDS`` (province, department, district, commune, desk).
    kind: Mapped[str] = mapped_column(String(16), default="commune", server_default="commune")
    default_survey: Mapped[str | None] = mapped_column(String(64))
    #: Points for the agency-level criteria 5, 8, 9 of Circular 01/2018 as set before they were
    #: kept per quarter (``UnitCriteria``): read only as the fallback of a quarter with none.
    agency_criteria: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_key"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agency.id", ondelete="CASCADE"))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column()
    #: The hour the key was last used (hour-level: when a report came is the agency's own, but
    #: no finer trace is needed to tell a live key from a forgotten one).
    last_used_at: Mapped[dt.datetime | None] = mapped_column()


#: An official's lifecycle (``storage.officials``): serving, moved to another unit, gone.
OFFICIAL_ACTIVE, OFFICIAL_MOVED, OFFICIAL_LEFT = "active", "moved", "left"


class Official(Base):
    """One official's service in one unit. A move to another unit is a new row there and this
    one marked ``moved``: past ratings point at this row, so they keep the unit and the
    official they rated. Rows are never deleted (ratings refer to them)."""

    __tablename__ = "official"
    __table_args__ = (UniqueConstraint("agency_id", "code"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agency.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=OFFICIAL_ACTIVE)
    #: The day the official moved or left (None while active).
    ended_on: Mapped[dt.date | None] = mapped_column(Date)
    #: The row of the unit they moved to.
    moved_to_id: Mapped[str | None] = mapped_column(ForeignKey("official.id"))


class Procedure(Base):
    """An administrative procedure of the national catalogue: ``code`` is its national code
    (mã thủ tục hành chính on the national public service portal), ``field`` its lĩnh vực
    (``storage.fields``), the dimension that groups procedures in every release."""

    __tablename__ = "procedure"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    field: Mapped[str | None] = mapped_column(String(32))
    #: The survey a dossier of this procedure gets when it names none, before its unit's
    #: ``Agency.default_survey`` (None: the unit's; ``storage.unit_surveys``).
    survey_id: Mapped[str | None] = mapped_column(String(64))


class ProcedureAssignment(Base):
    """A procedure a unit handles. Unassigning keeps the row (``active`` false), so a sync
    that drops a procedure can be told apart from one that never had it. A procedure no unit
    was ever assigned is the shared catalogue every unit may report (as before assignments)."""

    __tablename__ = "procedure_assignment"
    agency_id: Mapped[str] = mapped_column(
        ForeignKey("agency.id", ondelete="CASCADE"), primary_key=True
    )
    procedure_id: Mapped[str] = mapped_column(
        ForeignKey("procedure.id", ondelete="CASCADE"), primary_key=True
    )
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class UnitCriteria(Base):
    """The agency-level criteria 5, 8 and 9 of Circular 01/2018 of one unit for one calendar
    quarter (``storage.unit_criteria``), each 2/1/0 as an assessor scored it, None when not
    assessed. A quarter with no row falls back to ``Agency.agency_criteria`` (set before 0020)."""

    __tablename__ = "unit_criteria"
    agency_id: Mapped[str] = mapped_column(
        ForeignKey("agency.id", ondelete="CASCADE"), primary_key=True
    )
    #: The quarter's first day (1 January, April, July or October).
    quarter_start: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    c5: Mapped[int | None] = mapped_column(Integer)
    c8: Mapped[int | None] = mapped_column(Integer)
    c9: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# --- operational store -----------------------------------------------------------------------
class Dossier(Base):
    """A dossier registered at reception; deleted once its survey closes."""

    __tablename__ = "dossier"
    __table_args__ = (UniqueConstraint("agency_id", "dossier_hash"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agency.id", ondelete="CASCADE"))
    dossier_hash: Mapped[str] = mapped_column(String(64))
    dossier_key_id: Mapped[str] = mapped_column(String(16))
    procedure_id: Mapped[str | None] = mapped_column(ForeignKey("procedure.id"))
    official_id: Mapped[str | None] = mapped_column(ForeignKey("official.id"))
    survey_id: Mapped[str | None] = mapped_column(String(64))
    received_on: Mapped[dt.date | None] = mapped_column(Date)
    due_on: Mapped[dt.date | None] = mapped_column(Date)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    token_expires_at: Mapped[dt.datetime | None] = mapped_column()
    #: Where the citizen bound a chat: sealed address plus its contact pseudonym.
    address_sealed: Mapped[str | None] = mapped_column(Text)
    contact_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    language: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SurveyLedger(Base):
    """Who was asked and who completed, by dossier pseudonym: never two surveys per dossier."""

    __tablename__ = "survey_ledger"
    __table_args__ = (UniqueConstraint("agency_id", "dossier_hash"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agency.id", ondelete="CASCADE"))
    dossier_hash: Mapped[str] = mapped_column(String(64))
    dossier_key_id: Mapped[str] = mapped_column(String(16))
    survey_id: Mapped[str] = mapped_column(String(64))
    reported_on: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(24), default="waiting")
    channel: Mapped[str | None] = mapped_column(String(24))
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    completed: Mapped[bool] = mapped_column(Boolean, default=False)


class Invitation(Base):
    """A live survey conversation; deleted (with its address and state) when the survey closes."""

    __tablename__ = "invitation"
    __table_args__ = (Index("ix_invitation_contact_status", "contact_hash", "status"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    ledger_id: Mapped[str] = mapped_column(ForeignKey("survey_ledger.id", ondelete="CASCADE"))
    dossier_id: Mapped[str] = mapped_column(ForeignKey("dossier.id", ondelete="CASCADE"))
    survey_id: Mapped[str] = mapped_column(String(64))
    survey_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(24))
    channel: Mapped[str | None] = mapped_column(String(24))
    address_sealed: Mapped[str | None] = mapped_column(Text)
    contact_hash: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(8))
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    response_id: Mapped[str | None] = mapped_column(String(32))
    #: Dates the agency reported, kept only to compute criteria 1 and 2 at completion.
    timing: Mapped[dict[str, Any]] = mapped_column(JSON)
    expires_at: Mapped[dt.datetime] = mapped_column()
    reminder_due_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class InviteCap(Base):
    """The last day the service invited a citizen, under a keyed hash of one way it reaches
    them (``storage.invite_cap``): nothing about which agency, which survey or what came of
    it; deleted once ``SURVEYBOT_INVITE_CAP_DAYS`` have passed, and by /delete."""

    __tablename__ = "invite_cap"
    cap_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    invited_on: Mapped[dt.date] = mapped_column(Date, index=True)


class OptOut(Base):
    """A contact that said /stop: never surveyed again. Only the contact pseudonym is kept."""

    __tablename__ = "opt_out"
    contact_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16))
    created_on: Mapped[dt.date] = mapped_column(Date)


class OutboxMessage(Base):
    """A message to deliver, written in the same transaction as the change that caused it.

    ``priority`` 0 is a reply inside a conversation, 1 an invitation or reminder: replies never
    wait behind a backlog of new invitations. The address is sealed and erased once sent.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_ready", "status", "priority", "available_at"),
        # A lane's claim walks this in order and stops after its limit of heads, instead of
        # anti-joining every unsent row before a sort (docs/benchmarks.md, Dispatch).
        Index(
            "ix_outbox_lane_order",
            "priority",
            "created_at",
            postgresql_where=text("status IN ('pending', 'sending')"),
            sqlite_where=text("status IN ('pending', 'sending')"),
        ),
        # Its probe "an older unsent message of this conversation?": one small index lookup,
        # never a bitmap of every unsent row (what stale statistics chose: 1.1 s per claim).
        Index(
            "ix_outbox_unsent_conversation",
            "conversation",
            "created_at",
            postgresql_where=text("status IN ('pending', 'sending', 'stalled')"),
            sqlite_where=text("status IN ('pending', 'sending', 'stalled')"),
        ),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dedup_key: Mapped[str] = mapped_column(String(128), unique=True)
    channel: Mapped[str] = mapped_column(String(24))
    address_sealed: Mapped[str | None] = mapped_column(Text)
    #: Contact pseudonym: messages to one conversation go out strictly in order.
    conversation: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    priority: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    invitation_id: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column()


# --- confidential store ----------------------------------------------------------------------
class Response(Base):
    """What one citizen answered. Joinable to nothing that names them or their dossier."""

    __tablename__ = "response"
    #: Aggregates read ``ResponseTally``, which triggers keep in step with this table.
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agency.id", ondelete="CASCADE"))
    official_id: Mapped[str | None] = mapped_column(ForeignKey("official.id"))
    procedure_id: Mapped[str | None] = mapped_column(ForeignKey("procedure.id"))
    survey_id: Mapped[str] = mapped_column(String(64))
    survey_version: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(24))
    language: Mapped[str] = mapped_column(String(8))
    answered_on: Mapped[dt.date] = mapped_column(Date, index=True)
    rater_hash: Mapped[str] = mapped_column(String(64), index=True)
    rater_key_id: Mapped[str] = mapped_column(String(16))
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    #: 1..5 on the common scale (5 Rất hài lòng … 1 Rất không hài lòng); ≤ 2 is "Không hài lòng".
    satisfaction: Mapped[int | None] = mapped_column(Integer)
    #: Criteria points {"1": 2, "3": 1, ...} of the scheme that scored it, when it has criteria.
    criteria: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: The score of ``score_scheme`` (a ``bot.flows.scoring.SCHEMES`` id): its total out of its
    #: maximum, and the band of the total under the bands in force when it was (re)scored.
    score_total: Mapped[float | None] = mapped_column()
    score_maximum: Mapped[float | None] = mapped_column()
    score_band: Mapped[str | None] = mapped_column(String(24))
    score_scheme: Mapped[str | None] = mapped_column(String(32))
    #: What the scheme was given (``ScoreInputs``), so the response can be scored again when the
    #: rules change: answer points, the on-time classes of criteria 1-2 (never the dossier's
    #: dates), the agency-level criteria. Never exported row-level nor shown.
    score_inputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: Each answer as the one cell an export shows ({question id: text}), kept beside the answer
    #: rows by ``record_answer``: a row-level export then reads this table alone, with no pivot
    #: of the answer table (which cost most of a million-row export; docs/benchmarks.md).
    answers: Mapped[dict[str, str] | None] = mapped_column(JSON)

    def record_answer(
        self, question_id: str, value: Any, points: int | None = None, text: str | None = None
    ) -> Answer:
        """The new answer row, with this response's export cell set to match.

        The only way answers are written, so the answer rows and the ``answers`` cells cannot
        disagree; a re-answered question replaces its cell (the caller deletes the old row).
        """
        self.answers = {**(self.answers or {}), question_id: answer_cell(value, text)}
        return Answer(
            response_id=self.id, question_id=question_id, value=value, points=points, text=text
        )


class ResponseTally(Base):
    """Responses, ratings and score totals of one unit at one satisfaction level.

    Written only by the database's triggers on ``response`` (storage.tally, migration 0006):
    every aggregate is a sum over these few rows instead of a scan of every response.
    """

    __tablename__ = "response_tally"
    #: official, procedure, day, class (score band) or criteria (the criteria JSON)
    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    agency_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: The unit's id, day, score band or criteria text; '' when the response has none.
    unit: Mapped[str] = mapped_column(Text, primary_key=True)
    #: 1..5, or 0 when not rated.
    satisfaction: Mapped[int] = mapped_column(Integer, primary_key=True)
    responses: Mapped[int] = mapped_column(Integer, default=0)
    scored: Mapped[int] = mapped_column(Integer, default=0)
    score_tenths: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The sum of the scored responses' maxima, in tenths: a mean reads "total / maximum".
    maximum_tenths: Mapped[int] = mapped_column(BigInteger, default=0)


def answer_cell(value: Any, text: str | None) -> str:
    """One answer as a single text cell: the free text, or the option value(s), "|"-joined."""
    if text is not None:
        return text
    if value is None:
        return ""
    if isinstance(value, list):
        return "|".join(map(str, value))
    return str(value)


class Answer(Base):
    __tablename__ = "answer"
    __table_args__ = (UniqueConstraint("response_id", "question_id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    response_id: Mapped[str] = mapped_column(ForeignKey("response.id", ondelete="CASCADE"))
    question_id: Mapped[str] = mapped_column(String(64))
    #: Option values (a list for multiple choice), or None for free text.
    value: Mapped[Any] = mapped_column(JSON)
    points: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str | None] = mapped_column(Text)


class SurveyVersion(Base):
    """A survey definition as it was first used, kept for as long as anything refers to it.

    Written at start-up for every version the package and the surveys folder hold (so before
    any invitation can use it): an invitation begun on version N keeps running on N after the
    YAML of N is gone, and a version's text can never change under it.
    """

    __tablename__ = "survey_version"
    survey_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The YAML as read; re-validated on every load.
    definition: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(255))
    stored_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SurveyDraft(Base):
    """A survey definition uploaded in the dashboard, validated, not yet published.

    Previewed in the simulator through an unguessable token (only its SHA-256 is stored);
    publishing writes it to ``survey_version`` as a new version, after which it is kept only as
    the record of who published what.
    """

    __tablename__ = "survey_draft"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    survey_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[str] = mapped_column(Text)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column()


# --- releases (issue 10) --------------------------------------------------------------------
class Release(Base):
    """The published figures of one closed period, computed once and never recomputed.

    Periods never overlap (``starts_on`` is unique and a new period starts after the last one
    ends), so no two releases share a response and nothing can be learnt by subtracting them.
    """

    __tablename__ = "release"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    #: "2026-11", "2026-W47" or "2026-Q4"
    label: Mapped[str] = mapped_column(String(16))
    #: month, week or quarter
    period: Mapped[str] = mapped_column(String(16))
    starts_on: Mapped[dt.date] = mapped_column(Date, unique=True)
    ends_on: Mapped[dt.date] = mapped_column(Date)
    published_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: The disclosure rule the figures were computed under (k values, period).
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)


class ReleaseFigures(Base):
    """One scope of a release: ``""`` for the province (agencies ranked), else an agency id."""

    __tablename__ = "release_figures"
    release_id: Mapped[str] = mapped_column(
        ForeignKey("release.id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)


class PeriodicReport(Base):
    """A quarterly or yearly report of one scope, as filed: its XLSX and PDF, built from the
    releases inside the period only (``storage.reports``), stored once per (scope, period, last
    release summed), so two processes generating it at once keep one."""

    __tablename__ = "periodic_report"
    __table_args__ = (UniqueConstraint("scope", "kind", "label", "through"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    #: ``""`` for the province, else an agency id (as ``release_figures.scope``).
    scope: Mapped[str] = mapped_column(String(32), index=True)
    #: The scope's code when generated (``""`` for the province): file names, audit entries.
    code: Mapped[str] = mapped_column(String(64))
    #: quarter or year
    kind: Mapped[str] = mapped_column(String(8))
    #: "2026-Q4" or "2026"
    label: Mapped[str] = mapped_column(String(16))
    #: The last day of the last release summed: a report of a period still open is replaced by
    #: a new row once another release falls inside it.
    through: Mapped[dt.date] = mapped_column(Date)
    #: No release can still come inside the period.
    complete: Mapped[bool] = mapped_column(Boolean)
    #: The labels of the releases summed.
    releases: Mapped[list[str]] = mapped_column(JSON)
    generated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: "schedule" or "request"
    trigger: Mapped[str] = mapped_column(String(16))
    xlsx: Mapped[bytes] = mapped_column(LargeBinary)
    pdf: Mapped[bytes] = mapped_column(LargeBinary)


# --- audit -----------------------------------------------------------------------------------
class AuditEntry(Base):
    """Hash-chained: each entry's hash covers the previous one, so an edit breaks the chain."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))


# --- Zalo (issue 4) ----------------------------------------------------------------------------
class DossierContact(Base):
    """Every channel a citizen bound for one dossier (chat ids, or a phone for ZNS), sealed.

    An invitation tries them in the admin's channel order and falls back to the next on a
    permanent refusal. Deleted with the dossier when the survey closes.
    """

    __tablename__ = "dossier_contact"
    __table_args__ = (UniqueConstraint("dossier_id", "channel"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dossier_id: Mapped[str] = mapped_column(ForeignKey("dossier.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(24))
    address_sealed: Mapped[str] = mapped_column(Text)
    contact_hash: Mapped[str] = mapped_column(String(64))
    #: Set once the channel refused for good (OA window closed, blocked): skipped afterwards.
    failed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ZaloToken(Base):
    """The OA's rotating OAuth pair, sealed. Refresh tokens are single-use: the new pair is
    committed here before the access token is used, and one process refreshes at a time."""

    __tablename__ = "zalo_token"
    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    access_sealed: Mapped[str | None] = mapped_column(Text)
    refresh_sealed: Mapped[str | None] = mapped_column(Text)
    access_expires_at: Mapped[dt.datetime | None] = mapped_column()
    #: "ok", or "failed" after a refused refresh (sends pause until an admin re-consents).
    status: Mapped[str] = mapped_column(String(16), default="ok")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ZnsTracking(Base):
    """One ZNS rating template sent for an invitation, found again by its opaque tracking id.

    ``tracking_id`` is random (never the dossier code or the phone); ``msg_hash`` is the SHA-256
    of Zalo's msg_id, so a rating seen twice (webhook and reconciliation) is stored once.
    """

    __tablename__ = "zns_tracking"
    tracking_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    invitation_id: Mapped[str | None] = mapped_column(String(32), index=True)
    msg_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class InboxEvent(Base):
    """A verified inbound channel event, stored before it is acknowledged (``storage.inbox``).

    Unique per (channel, event key): the row is also the de-duplication mark. The body is sealed
    (AES-GCM) while pending and erased once processed; the conversation key orders one chat's
    events and is erased with it.
    """

    __tablename__ = "inbox_event"
    __table_args__ = (
        UniqueConstraint("channel", "event_key", name="uq_inbox_event"),
        Index("ix_inbox_ready", "status", "available_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    channel: Mapped[str] = mapped_column(String(24))
    #: SHA-256 of the channel's own event id (update_id, msg_id, message_id).
    event_key: Mapped[str] = mapped_column(String(64))
    #: A keyed hash of the chat: one chat's events are processed one at a time, in order.
    conversation: Mapped[str] = mapped_column(String(64), index=True)
    body_sealed: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    available_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    leased_until: Mapped[dt.datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(String(255))


# --- admins (issue 5) --------------------------------------------------------------------------
class AdminUser(Base):
    """A dashboard login: role "admin" (province admin) manages and sees every unit; "manager"
    manages the units, API keys and viewer logins under ``agency_id`` and sees that subtree;
    "viewer" sees that subtree only (``bot.dashboard.scope``).

    Only an argon2 hash of the password is stored.
    """

    __tablename__ = "admin_user"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    agency_id: Mapped[str | None] = mapped_column(ForeignKey("agency.id", ondelete="CASCADE"))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Set by an admin's reset: the next sign-in must choose a new password before any page.
    must_change_password: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AdminSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored here."""

    __tablename__ = "admin_session"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("admin_user.id", ondelete="CASCADE"))
    csrf: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
