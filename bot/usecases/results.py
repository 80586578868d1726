"""Reporting returned results, set-based: a batch of 1,000 costs a dozen statements, not 8,000.

Every item is still judged on its own, in the batch's order, as if reported one after another:
a duplicate (of a ledger row, or of an earlier item of the batch), an unknown survey, procedure
or official is that item's own outcome, and the good items are taken. What one-by-one reporting
did per item with a SAVEPOINT and a flush is done here for the whole batch at once:

1. read the ledgers and dossiers of every code (under every listed key), the procedures and
   officials named, and the contacts of the dossiers found: four or five queries;
2. write the ledger rows in one ``INSERT … ON CONFLICT DO NOTHING``: the unique (agency,
   dossier) constraint decides races with concurrent reports, and an item whose row was not
   written is a duplicate, before anything else of it is written (never two surveys);
3. the missing dossiers, the same way (one registered concurrently is read back, not doubled);
4. the opt-outs of every contact in one query, the invitation cap for the batch in a few
   (``storage.invite_cap.claim_many``), then the invitations and their first messages, added
   to the session and written by one flush (SQLAlchemy's multi-row INSERT), and the ledgers'
   outcomes in one bulk UPDATE.

One transaction for the batch, as before: it is all taken, or (on a database failure) nothing.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.flows.definition import SurveyDefinition
from bot.flows.engine import Start
from bot.i18n import normalise_language
from bot.schemas import (
    FieldProblem,
    ResultBatch,
    ResultBatchOutcome,
    ResultItemOutcome,
    ResultReport,
)
from bot.usecases.context import Context, ServiceError
from bot.usecases.outbound import step_rows
from bot.usecases.surveys import CAPPED, contact_order, engine, reach_of, reminder_due, start_on
from storage import directory, invite_cap, outbox
from storage.models import (
    Agency,
    Dossier,
    DossierContact,
    Invitation,
    OptOut,
    OutboxMessage,
    SurveyLedger,
    new_id,
    utcnow,
)
from storage.pseudonym import Pseudonym, normalise_identifier
from storage.upsert import chunks, insert_ignoring, insert_rows, table_of

#: PostgreSQL's deadlock and serialization failures: the transaction is gone, run it again.
RETRYABLE = {"40P01", "40001"}
RETRIES = 3
SurveyStatus = Literal["sent", "waiting_for_binding", "opted_out", "capped"]


@dataclass
class _Item:
    """One result of the batch on its way: what was resolved for it so far."""

    index: int
    report: ResultReport
    #: The dossier's pseudonyms under every listed key, the active key's first.
    digests: list[str]
    #: The active key's id (a new dossier and its ledger row are stored under it).
    key_id: str
    outcome: ResultItemOutcome | None = None
    dossier: Dossier | None = None
    survey: SurveyDefinition | None = None
    procedure_id: str | None = None
    official_id: str | None = None
    ledger: _Ledger | None = None
    contacts: list[DossierContact] = field(default_factory=list)


@dataclass(slots=True)
class _Ledger:
    """An item's ledger row: written by one INSERT for the batch, its outcome (status,
    channel, the template survey a channel asked for) by one bulk UPDATE at the end."""

    id: str
    agency_id: str
    dossier_hash: str
    dossier_key_id: str
    survey_id: str
    reported_on: dt.date
    status: str = "waiting"
    channel: str | None = None
    delivered: bool = False
    completed: bool = False

    def row(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


def dossier_digests(ctx: Context, agency: Agency, code: str) -> list[str]:
    """The pseudonyms a dossier code may be stored under, the active key's first."""
    return [p.digest for p in dossier_pseudonyms(ctx, agency, code)]


def dossier_pseudonyms(ctx: Context, agency: Agency, code: str) -> list[Pseudonym]:
    return ctx.keys.candidates("dossier", f"{agency.id}:{normalise_identifier(code)}")


def new_dossier(ctx: Context, agency: Agency, code: str) -> Dossier:
    pseudonym = ctx.keys.pseudonym("dossier", f"{agency.id}:{normalise_identifier(code)}")
    return Dossier(
        id=new_id(),
        agency_id=agency.id,
        dossier_hash=pseudonym.digest,
        dossier_key_id=pseudonym.key_id,
        created_at=ctx.clock(),
    )


def survey_for(ctx: Context, agency: Agency, requested: str | None) -> SurveyDefinition:
    survey_id = requested or agency.default_survey or ctx.settings.default_survey
    if survey_id not in ctx.catalog:
        detail = f"no survey named {survey_id!r}"
        raise ServiceError(422, "unknown_survey", detail, [("survey", detail)])
    return ctx.catalog.latest(survey_id)


async def report(ctx: Context, agency: Agency, batch: ResultBatch) -> ResultBatchOutcome:
    """The batch's outcome, item by item, in its order. A transaction PostgreSQL chose as a
    deadlock's victim (rows of concurrent batches met in another order somewhere) left
    nothing behind: it is run again, from the start, a few times."""
    for attempt in range(1, RETRIES + 1):
        try:
            items = await _report_once(ctx, agency, batch)
            break
        except DBAPIError as exc:
            if attempt == RETRIES or _sqlstate(exc) not in RETRYABLE:
                raise
    ctx.notify()
    outcomes = [item.outcome for item in items if item.outcome is not None]
    return ResultBatchOutcome(
        accepted=sum(i.status == "survey_created" for i in outcomes),
        duplicates=sum(i.status == "duplicate" for i in outcomes),
        rejected=sum(i.status == "rejected" for i in outcomes),
        items=outcomes,
    )


async def _report_once(ctx: Context, agency: Agency, batch: ResultBatch) -> list[_Item]:
    now = ctx.clock()
    items = []
    for index, result in enumerate(batch.results):
        pseudonyms = dossier_pseudonyms(ctx, agency, result.dossier_code)
        items.append(_Item(index, result, [p.digest for p in pseudonyms], pseudonyms[0].key_id))
    async with ctx.sessions() as session:
        await _judge(ctx, session, agency, items)
        taken = await _write_ledgers(session, agency, items, now)
        await _resolve_dossiers(ctx, session, agency, taken)
        await _start(ctx, session, taken, now)
        await session.commit()
    return items


def _sqlstate(exc: DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return str(code) if code else None


def _by_dossier(row: dict[str, Any]) -> tuple[str, str]:
    return str(row["agency_id"]), str(row["dossier_hash"])


async def _judge(ctx: Context, session: AsyncSession, agency: Agency, items: list[_Item]) -> None:
    """Duplicates and rejections, in the batch's order; the others get survey and references."""
    every = sorted({d for item in items for d in item.digests})
    surveyed: set[str] = set()
    for part in chunks(every):
        surveyed.update(
            (
                await session.execute(
                    select(SurveyLedger.dossier_hash).where(
                        SurveyLedger.agency_id == agency.id, SurveyLedger.dossier_hash.in_(part)
                    )
                )
            ).scalars()
        )
    dossiers = await _dossiers(session, agency, every)
    procedures, officials = await directory.references_for_reports(
        session,
        agency.id,
        {i.report.procedure_code for i in items if i.report.procedure_code},
        {i.report.official_code for i in items if i.report.official_code},
    )
    accepted: set[str] = set()
    for item in items:
        if surveyed.intersection(item.digests) or item.digests[0] in accepted:
            item.outcome = ResultItemOutcome(index=item.index, status="duplicate")
            continue
        item.dossier = next((dossiers[d] for d in item.digests if d in dossiers), None)
        procedure, official = item.report.procedure_code, item.report.official_code
        try:
            # Named, else the registered dossier's, else the procedure's, else the unit's.
            procedure_ref = procedures.get(procedure) if procedure else None
            item.survey = survey_for(
                ctx,
                agency,
                item.report.survey
                or (item.dossier.survey_id if item.dossier else None)
                or (procedure_ref.survey if procedure_ref else None),
            )
            refused = [
                (name, ref.refusal)
                for name, ref in (
                    ("procedure_code", procedures.get(procedure) if procedure else None),
                    ("official_code", officials.get(official) if official else None),
                )
                if ref is not None and ref.refusal is not None
            ]
            if refused:
                raise refusal(refused)
        except ServiceError as exc:
            item.outcome = ResultItemOutcome(
                index=item.index,
                status="rejected",
                error=exc.detail,
                code=exc.error,
                fields=[FieldProblem(field=f, problem=p) for f, p in exc.fields] or None,
            )
            continue
        item.procedure_id = procedures[procedure].id if procedure else None
        item.official_id = officials[official].id if official else None
        accepted.add(item.digests[0])


def refusal(refused: list[tuple[str, tuple[str, str]]]) -> ServiceError:
    """A 422 naming every code a report may not name (unknown, an official who left or moved,
    a procedure not assigned to this unit), the first one's error code leading."""
    return ServiceError(
        422,
        refused[0][1][0],
        "; ".join(detail for _, (_, detail) in refused),
        [(name, detail) for name, (_, detail) in refused],
    )


async def _dossiers(
    session: AsyncSession, agency: Agency, digests: Sequence[str]
) -> dict[str, Dossier]:
    found: dict[str, Dossier] = {}
    for part in chunks(digests):
        rows = await session.execute(
            select(Dossier).where(Dossier.agency_id == agency.id, Dossier.dossier_hash.in_(part))
        )
        found.update((dossier.dossier_hash, dossier) for dossier in rows.scalars())
    return found


async def _write_ledgers(
    session: AsyncSession, agency: Agency, items: list[_Item], now: dt.datetime
) -> list[_Item]:
    """One ledger row per accepted item, all in one statement; those the unique constraint
    refused (a concurrent report of the same dossier won) become duplicates. The taken items."""
    candidates = [item for item in items if item.outcome is None]
    for item in candidates:
        assert item.survey is not None
        hash_, key_id = (
            (item.dossier.dossier_hash, item.dossier.dossier_key_id)
            if item.dossier is not None
            else (item.digests[0], item.key_id)
        )
        item.ledger = _Ledger(new_id(), agency.id, hash_, key_id, item.survey.id, now.date())
    if not candidates:
        return []
    table = SurveyLedger.__table__
    # In one order (the unique key's) in every batch: two batches racing for the same
    # dossiers then queue behind each other instead of deadlocking.
    rows = sorted((i.ledger.row() for i in candidates if i.ledger), key=_by_dossier)
    written = set(
        (
            await session.execute(
                insert_ignoring(session, SurveyLedger, ["agency_id", "dossier_hash"]).returning(
                    table.c.id
                ),
                rows,
            )
        ).scalars()
    )
    taken = []
    for item in candidates:
        assert item.ledger is not None
        if item.ledger.id in written:
            taken.append(item)
        else:
            item.outcome = ResultItemOutcome(index=item.index, status="duplicate")
    return taken


async def _resolve_dossiers(
    ctx: Context, session: AsyncSession, agency: Agency, items: list[_Item]
) -> None:
    """Every taken item's dossier, created when missing (one statement; a dossier registered
    concurrently is read back, not doubled), updated with what the result says, and its
    contacts (a phone given with the result is one more on every phone channel)."""
    missing = [item for item in items if item.dossier is None]
    if missing:
        created = ctx.clock()
        rows = sorted((_dossier_row(agency, i, created) for i in missing), key=_by_dossier)
        await session.execute(
            insert_ignoring(session, Dossier, ["agency_id", "dossier_hash"]), rows
        )
        found = await _dossiers(session, agency, [item.digests[0] for item in missing])
        for item in missing:
            item.dossier = found[item.digests[0]]
    for item in items:
        dossier, report = item.dossier, item.report
        assert dossier is not None and item.survey is not None
        dossier.survey_id = item.survey.id
        dossier.procedure_id = item.procedure_id or dossier.procedure_id
        dossier.official_id = item.official_id or dossier.official_id
        dossier.received_on = report.received_at or dossier.received_on
        dossier.due_on = report.due_at or dossier.due_on
        dossier.language = report.language or dossier.language
    ids = [item.dossier.id for item in items if item.dossier is not None]
    contacts: dict[str, list[DossierContact]] = {}
    for part in chunks(ids):
        found_contacts = await session.execute(
            select(DossierContact).where(DossierContact.dossier_id.in_(part))
        )
        for contact in found_contacts.scalars():
            contacts.setdefault(contact.dossier_id, []).append(contact)
    for item in items:
        assert item.dossier is not None
        item.contacts = contacts.get(item.dossier.id, [])
        if item.report.phone:
            _add_phone(ctx, session, item, item.report.phone)


def _dossier_row(agency: Agency, item: _Item, created: dt.datetime) -> dict[str, object]:
    """A new dossier as the result describes it (so reading it back changes nothing)."""
    report = item.report
    assert item.survey is not None
    return {
        "id": new_id(), "agency_id": agency.id, "dossier_hash": item.digests[0],
        "dossier_key_id": item.key_id, "survey_id": item.survey.id,
        "procedure_id": item.procedure_id, "official_id": item.official_id,
        "received_on": report.received_at, "due_on": report.due_at,
        "language": report.language, "created_at": created,
    }  # fmt: skip


def _add_phone(ctx: Context, session: AsyncSession, item: _Item, phone: str) -> None:
    """``surveys.add_phone`` on the contacts already read: a re-given phone replaces the old
    address and clears an earlier refusal; the new rows go with the batch's flush."""
    assert item.dossier is not None
    by_channel = {contact.channel: contact for contact in item.contacts}
    for channel in ctx.phone_channels:
        known = by_channel.get(channel)
        contact = known or DossierContact(id=new_id(), dossier_id=item.dossier.id, channel=channel)
        if known is None:
            session.add(contact)
            item.contacts.append(contact)
        contact.address_sealed = ctx.keys.seal(f"{channel}:{phone}")
        contact.contact_hash = ctx.keys.channel_pseudonym("contact", channel, phone).digest
        contact.failed = False


async def _start(ctx: Context, session: AsyncSession, items: list[_Item], now: dt.datetime) -> None:
    """Opt-outs and the cap decided for the batch at once, then each survey started: its
    invitation and first messages written with one multi-row INSERT each."""
    reachable = await _reachable(ctx, session, items)
    days = ctx.settings.invite_cap_days
    claimed = await invite_cap.claim_many(
        session,
        ctx.keys,
        {
            item.index: reach_of(ctx, item.dossier, [c.address_sealed for c in item.contacts])
            for item in items
            if item.index in reachable and item.dossier is not None and days > 0
        },
        now.date(),
        days,
    )
    gone = [item for item in items if item.outcome is not None]  # opted out
    for item in items:
        if item.index in reachable and days > 0 and item.index not in claimed:
            # Invited (by this or another agency) within the cap's window: no survey now.
            # The ledger row says so, and coverage counts it; nothing else is kept.
            assert item.ledger is not None
            item.ledger.status = CAPPED
            item.outcome = _created(item, CAPPED)
            gone.append(item)
    if gone:
        await session.execute(
            delete(Dossier).where(Dossier.id.in_([i.dossier.id for i in gone if i.dossier]))
        )
    invitations: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for item in items:
        if item.outcome is not None:
            continue
        contact = reachable.get(item.index)
        if contact is not None and ctx.capabilities[contact.channel].template_survey is not None:
            await _start_template(ctx, session, item, contact, now)
            continue
        invitation = _invitation(ctx, item, now)
        if contact is None:
            item.outcome = _created(item, "waiting_for_binding")
        else:
            messages += _open(ctx, item, invitation, contact)
            item.outcome = _created(item, "sent")
        invitations.append(invitation)
    # COPY on PostgreSQL (storage.upsert.insert_rows): the rows are new (random ids, dedup
    # keys of new invitations), nothing for ON CONFLICT to decide.
    await insert_rows(session, table_of(Invitation), invitations)
    await insert_rows(session, table_of(OutboxMessage), messages)
    await _write_outcomes(session, items)


async def _reachable(
    ctx: Context, session: AsyncSession, items: list[_Item]
) -> dict[int, DossierContact]:
    """Each item's best contact that did not say /stop (``surveys.first_contact``), from one
    query of the opt-outs of every contact of the batch; an item whose bound chat said /stop
    is ``opted_out`` (its ledger says so)."""
    known: dict[str, set[str]] = {}

    def pseudonyms(contact_hash: str, sealed: str | None) -> set[str]:
        # A bound chat is both the dossier's address and one of its contacts (sealed twice,
        # one address): its pseudonyms are computed once, unless its first seal did not open.
        if len(known.get(contact_hash, ())) <= 1:
            known[contact_hash] = ctx.opt_out_digests(contact_hash, sealed)
        return known[contact_hash]

    for item in items:
        dossier = item.dossier
        assert dossier is not None
        if dossier.contact_hash:
            pseudonyms(dossier.contact_hash, dossier.address_sealed)
        for contact in item.contacts:
            pseudonyms(contact.contact_hash, contact.address_sealed)
    every = sorted(set().union(*known.values())) if known else []
    opted: set[str] = set()
    for part in chunks(every):
        rows = await session.execute(
            select(OptOut.contact_hash).where(OptOut.contact_hash.in_(part))
        )
        opted.update(rows.scalars())
    reachable: dict[int, DossierContact] = {}
    for item in items:
        dossier = item.dossier
        assert dossier is not None and item.ledger is not None
        if dossier.contact_hash and not opted.isdisjoint(
            pseudonyms(dossier.contact_hash, dossier.address_sealed)
        ):
            item.ledger.status = "opted_out"
            item.outcome = _created(item, "opted_out")
            continue
        for contact in contact_order(ctx, dossier, item.contacts):
            if opted.isdisjoint(pseudonyms(contact.contact_hash, contact.address_sealed)):
                reachable[item.index] = contact
                break
    return reachable


def _invitation(ctx: Context, item: _Item, now: dt.datetime) -> dict[str, Any]:
    """A new invitation's row, waiting for its citizen to bind."""
    dossier, survey, ledger, report = item.dossier, item.survey, item.ledger, item.report
    assert dossier is not None and survey is not None and ledger is not None
    language = normalise_language(dossier.language or ctx.settings.default_language)
    return {
        "id": new_id(),
        "ledger_id": ledger.id,
        "dossier_id": dossier.id,
        "survey_id": survey.id,
        "survey_version": survey.version,
        "status": "waiting",
        "channel": None,
        "address_sealed": None,
        "contact_hash": None,
        "language": language,
        "state": engine(ctx, survey).new_state(secrets.token_hex(3), language),
        "response_id": None,
        "timing": {
            "received": _iso(dossier.received_on),
            "due": _iso(dossier.due_on),
            "returned": report.returned_at.isoformat(),
            "steps": [
                {"due": s.due_at.isoformat(), "done": s.done_at.isoformat()} for s in report.steps
            ],
        },
        "expires_at": now + dt.timedelta(hours=ctx.settings.survey_ttl_hours),
        "reminder_due_at": None,
        "created_at": utcnow(),
    }


def _open(
    ctx: Context, item: _Item, invitation: dict[str, Any], contact: DossierContact
) -> list[dict[str, Any]]:
    """``surveys.start_on`` for a chat channel, on the invitation's row: its first question
    (the outbox rows returned), the reminder's due time, and the ledger's channel."""
    assert item.survey is not None and item.ledger is not None
    invitation.update(
        address_sealed=contact.address_sealed, contact_hash=contact.contact_hash,
        channel=contact.channel, status="sent",
        reminder_due_at=reminder_due(ctx, contact.channel),
    )  # fmt: skip
    item.ledger.status, item.ledger.channel, item.ledger.delivered = "sent", contact.channel, False
    step = engine(ctx, item.survey).step(invitation["state"], Start())
    invitation["state"] = step.state
    return step_rows(ctx, invitation["id"], contact.channel, contact.address_sealed,
                     contact.contact_hash, step, outbox.PRIORITY_INVITATION, "start")  # fmt: skip


async def _start_template(
    ctx: Context, session: AsyncSession, item: _Item, contact: DossierContact, now: dt.datetime
) -> None:
    """A channel with a survey of its own (the ZNS rating template): ``surveys.start_on``
    itself, on ORM objects (rare in a batch: only results whose citizen has no chat)."""
    ledger = item.ledger
    assert ledger is not None
    row = _invitation(ctx, item, now)
    invitation = Invitation(**row)
    session.add(invitation)
    stand_in = SurveyLedger(id=ledger.id, status=ledger.status, survey_id=ledger.survey_id)
    await start_on(ctx, session, invitation, stand_in, contact)
    ledger.status, ledger.channel = stand_in.status, stand_in.channel
    ledger.delivered, ledger.survey_id = bool(stand_in.delivered), stand_in.survey_id
    item.outcome = _created(item, "sent")


async def _write_outcomes(session: AsyncSession, items: list[_Item]) -> None:
    """The ledger rows whose outcome is known now (sent, opted out, capped; a survey waiting
    for its citizen to bind stays ``waiting``), in one bulk UPDATE."""
    changed = [
        {"id": row.id, "status": row.status, "channel": row.channel,
         "delivered": row.delivered, "survey_id": row.survey_id}
        for row in (item.ledger for item in items)
        if row is not None and row.status != "waiting"
    ]  # fmt: skip
    if changed:
        await session.execute(update(SurveyLedger), changed)


def _created(item: _Item, survey_status: SurveyStatus) -> ResultItemOutcome:
    return ResultItemOutcome(
        index=item.index,
        status="survey_created",
        survey_status=survey_status,
    )


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None
