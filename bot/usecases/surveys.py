"""The survey steps several use cases share: which channel reaches the citizen, starting the
invitation there, and closing it (score, then delete every operational trace)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable
from typing import Final

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels import TEMPLATE_PARAMS, TRACKING_ID, OutboundMessage
from bot.flows.definition import SurveyDefinition
from bot.flows.engine import Start, SurveyEngine
from bot.usecases.context import Context
from bot.usecases.outbound import enqueue_step
from storage import outbox
from storage.models import (
    Agency,
    Dossier,
    DossierContact,
    Invitation,
    OutboxMessage,
    Procedure,
    SurveyLedger,
    ZnsTracking,
    new_id,
)

#: The ledger status of a survey its citizen erased: the same as one that closed unanswered, so
#: the ledger neither says that this citizen took part nor that they asked for erasure.
ERASED_LEDGER_STATUS = "expired"
#: The ledger status (and API ``survey_status``) of a result whose citizen was invited within
#: ``SURVEYBOT_INVITE_CAP_DAYS``: no survey was started (``storage.invite_cap``).
CAPPED: Final = "capped"


def engine(ctx: Context, survey: SurveyDefinition) -> SurveyEngine:
    return SurveyEngine(survey, ctx.settings.max_free_text_chars)


def engine_for(ctx: Context, invitation: Invitation) -> SurveyEngine:
    return engine(ctx, ctx.definition(invitation))


async def add_contact(
    ctx: Context, session: AsyncSession, dossier: Dossier, channel: str, address: str
) -> None:
    """Remember (sealed) one more way to reach the citizen of this dossier; a re-bind of the
    same channel replaces the old address and clears an earlier refusal."""
    existing = (
        await session.execute(
            select(DossierContact).where(
                DossierContact.dossier_id == dossier.id, DossierContact.channel == channel
            )
        )
    ).scalar_one_or_none()
    contact = existing or DossierContact(id=new_id(), dossier_id=dossier.id, channel=channel)
    contact.address_sealed = ctx.keys.seal(f"{channel}:{address}")
    contact.contact_hash = ctx.keys.channel_pseudonym("contact", channel, address).digest
    contact.failed = False
    if existing is None:
        session.add(contact)
    await session.flush()


async def add_phone(ctx: Context, session: AsyncSession, dossier: Dossier, phone: str) -> None:
    """A phone number given at reception: a contact on every channel that reaches phones."""
    for channel in ctx.phone_channels:
        await add_contact(ctx, session, dossier, channel, phone)


async def reach(ctx: Context, session: AsyncSession, dossier: Dossier) -> list[str]:
    """Every way the service knows to reach this dossier's citizen (``<channel>:<address>``,
    opened in memory from the sealed addresses): what the invitation cap is keyed on."""
    sealed = (
        await session.execute(
            select(DossierContact.address_sealed).where(DossierContact.dossier_id == dossier.id)
        )
    ).scalars()
    return reach_of(ctx, dossier, sealed)


def reach_of(ctx: Context, dossier: Dossier, contacts_sealed: Iterable[str]) -> list[str]:
    """``reach`` given the sealed addresses of the dossier's contacts (a batch reads them for
    all its dossiers in one query)."""
    sealed = {dossier.address_sealed} if dossier.address_sealed else set()
    sealed.update(contacts_sealed)
    addresses = []
    for token in sealed:
        try:
            addresses.append(ctx.keys.open(token))
        except ValueError:  # sealed under a retired key: that way is gone anyway
            continue
    return addresses


async def first_contact(
    ctx: Context, session: AsyncSession, dossier: Dossier
) -> DossierContact | None:
    """The best reachable channel the citizen bound: admin order, configured channels only,
    never one that refused for good or whose contact said /stop."""
    rows = (
        await session.execute(select(DossierContact).where(DossierContact.dossier_id == dossier.id))
    ).scalars()
    for row in contact_order(ctx, dossier, rows):
        if not await ctx.opted_out(session, row.contact_hash, row.address_sealed):
            return row
    return None


def contact_order(
    ctx: Context, dossier: Dossier, contacts: Iterable[DossierContact]
) -> list[DossierContact]:
    """The dossier's usable contacts, best first (``first_contact`` before the opt-out check,
    which a batch makes for all its dossiers in one query)."""
    rows = list(contacts)
    known = {row.channel for row in rows}
    rows = [row for row in rows if not row.failed]
    if dossier.address_sealed and dossier.contact_hash:
        channel = ctx.keys.open(dossier.address_sealed).split(":", 1)[0]
        if channel not in known:  # bound before contacts were recorded
            rows.append(DossierContact(dossier_id=dossier.id, channel=channel,
                                       address_sealed=dossier.address_sealed,
                                       contact_hash=dossier.contact_hash, failed=False))  # fmt: skip
    order = ctx.settings.channel_priority
    rows = [r for r in rows if r.channel in ctx.capabilities]
    rows.sort(key=lambda r: order.index(r.channel) if r.channel in order else len(order))
    return rows


async def start_on(
    ctx: Context,
    session: AsyncSession,
    invitation: Invitation,
    ledger: SurveyLedger,
    contact: DossierContact,
    fallback: bool = False,
) -> None:
    """Send the invitation on ``contact``'s channel; the ledger records which channel."""
    invitation.address_sealed = contact.address_sealed
    invitation.contact_hash = contact.contact_hash
    invitation.channel = contact.channel
    invitation.status = "sent"
    ledger.status = "sent"
    ledger.channel = contact.channel
    ledger.delivered = False
    template = ctx.capabilities[contact.channel].template_survey
    if template is not None:
        await _start_template(ctx, session, invitation, ledger, contact, template)
        return
    invitation.reminder_due_at = reminder_due(ctx, contact.channel)
    survey_engine = engine_for(ctx, invitation)
    if fallback:
        invitation.state = survey_engine.new_state(secrets.token_hex(3), invitation.language)
    step = survey_engine.step(invitation.state, Start())
    invitation.state = step.state
    dedup = f"start-{contact.channel}" if fallback else "start"
    enqueue_step(ctx, session, invitation, step, outbox.PRIORITY_INVITATION, dedup)


async def _start_template(
    ctx: Context,
    session: AsyncSession,
    invitation: Invitation,
    ledger: SurveyLedger,
    contact: DossierContact,
    survey_id: str,
) -> None:
    """The channel's own survey (stars, chips, note) answered in the platform's app: one
    templated message with a tracking id the rating will come back with."""
    survey = ctx.catalog.latest(survey_id)
    invitation.survey_id, invitation.survey_version = survey.id, survey.version
    invitation.state = engine(ctx, survey).new_state(secrets.token_hex(3), invitation.language)
    ledger.survey_id = survey.id
    invitation.reminder_due_at = None
    tracking = ZnsTracking(tracking_id=secrets.token_hex(16), invitation_id=invitation.id)
    session.add(tracking)
    dossier = await session.get(Dossier, invitation.dossier_id)
    agency = await session.get(Agency, dossier.agency_id) if dossier else None
    procedure = (
        await session.get(Procedure, dossier.procedure_id)
        if dossier and dossier.procedure_id
        else None
    )
    params = {
        "agency": agency.name if agency else "",
        "procedure": procedure.name if procedure else "",
    }
    message = OutboundMessage("", extra={TRACKING_ID: tracking.tracking_id,
                                         TEMPLATE_PARAMS: params})  # fmt: skip
    outbox.enqueue(session, ctx.keys, channel=contact.channel,
                   address_sealed=contact.address_sealed,
                   conversation=contact.contact_hash, payload=message.to_dict(),
                   priority=outbox.PRIORITY_INVITATION,
                   dedup_key=f"{invitation.id}:{contact.channel}",
                   invitation_id=invitation.id, now=ctx.clock(),
                   not_before=ctx.quiet_until())  # fmt: skip


def attach(ctx: Context, invitation: Invitation, dossier: Dossier) -> None:
    """Point a waiting invitation at the chat its dossier was just bound to."""
    assert dossier.address_sealed is not None
    invitation.address_sealed = dossier.address_sealed
    invitation.contact_hash = dossier.contact_hash
    invitation.channel = ctx.keys.open(dossier.address_sealed).split(":", 1)[0]
    invitation.status = "sent"
    invitation.reminder_due_at = reminder_due(ctx, invitation.channel)


def reminder_due(ctx: Context, channel: str) -> dt.datetime | None:
    """When the one reminder of a survey just started on ``channel`` falls due: never on a
    channel that cannot carry one (``Capabilities.reminders``)."""
    capabilities = ctx.capabilities.get(channel)
    if capabilities is None or not capabilities.reminders:
        return None
    return ctx.clock() + dt.timedelta(hours=ctx.settings.reminder_after_hours)


async def finalize(
    ctx: Context, session: AsyncSession, invitation: Invitation, reason: str
) -> None:
    """Close a survey: score what was answered, then delete every operational trace. The
    caller holds the invitation's lock.

    An erased survey's ledger row is closed as an unanswered one (``ERASED_LEDGER_STATUS``):
    it still stops a second survey of the dossier, and no longer says that its citizen took
    part. Messages not yet sent are dropped unless the survey was completed (its last
    acknowledgement and thank-you still go out)."""
    ledger = await session.get(SurveyLedger, invitation.ledger_id)
    if ledger is not None:
        ledger.status = ERASED_LEDGER_STATUS if reason == "erased" else reason
        ledger.completed = reason == "completed"
    if invitation.response_id and reason != "erased":
        await ctx.responses.score(session, invitation, complete=reason == "completed")
    if reason != "completed":
        await outbox.retire_unsent(
            session,
            OutboxMessage.invitation_id == invitation.id,
            status="cancelled",
            reason=f"survey {reason}",
            now=ctx.clock(),
        )
    else:  # a stalled message of a finished survey would hold up the conversation for ever
        await outbox.retire_unsent(
            session,
            OutboxMessage.invitation_id == invitation.id,
            OutboxMessage.status == outbox.STALLED,
            status="cancelled",
            reason="survey completed",
            now=ctx.clock(),
        )
    # A tracked rating arriving after this finds no tracking row and is ignored, as before.
    await session.execute(delete(ZnsTracking).where(ZnsTracking.invitation_id == invitation.id))
    await session.execute(delete(Invitation).where(Invitation.id == invitation.id))
    await session.execute(delete(Dossier).where(Dossier.id == invitation.dossier_id))
