"""What a use case says to a chat: a step's prompts rendered for its channel, a plain reply, the
one "please slow down". Everything is queued in the caller's transaction (``storage.outbox``), so
a message is sent if and only if the state change that caused it committed."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels import OutboundMessage, render
from bot.flows.engine import Step
from bot.i18n import N_, gettext, normalise_language
from bot.usecases.context import FORGET, Context
from storage import outbox
from storage.models import Invitation, OutboxMessage

SLOW_DOWN = N_(
    "You are sending messages faster than I can read them. Please wait a moment, then send your "
    "answer again."
)


def enqueue_step(
    ctx: Context,
    session: AsyncSession,
    invitation: Invitation,
    step: Step,
    priority: int,
    dedup: str,
    closing: bool = False,
) -> None:
    """Queue a step's acknowledgements and prompts; ``closing`` marks the last message as the
    end of the conversation, after which the channel drops its chat state (``FORGET``)."""
    assert invitation.address_sealed and invitation.contact_hash and invitation.channel
    rows = step_rows(
        ctx,
        invitation.id,
        invitation.channel,
        invitation.address_sealed,
        invitation.contact_hash,
        step,
        priority,
        dedup,
        forget=ctx.question_ids(invitation) if closing else None,
    )
    session.add_all(OutboxMessage(**row) for row in rows)


def step_rows(
    ctx: Context,
    invitation_id: str,
    channel: str,
    address_sealed: str,
    conversation: str,
    step: Step,
    priority: int,
    dedup: str,
    forget: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The outbox rows of a step (``enqueue_step``; a batch writes many at once): ``forget``
    on the last message ends the conversation.

    What the service says on its own initiative (``PRIORITY_INVITATION``: an invitation, a
    reminder) is held until the end of quiet hours; replies go at once."""
    held = ctx.quiet_until() if priority == outbox.PRIORITY_INVITATION else None
    capabilities = ctx.capabilities[channel]
    language = step.state["lang"]
    messages: list[OutboundMessage] = []
    if capabilities.edits:
        for answer in step.answers:
            label = gettext(language, "Answer: {answer}", answer=answer.label)
            messages.append(OutboundMessage(label, question_id=answer.question_id,
                                            extra={"ack": True}))  # fmt: skip
    messages += [render(p, capabilities, language) for p in step.prompts]
    if forget is not None and messages:
        messages[-1].extra[FORGET] = forget
    now = ctx.clock()
    return [
        outbox.row(
            ctx.keys,
            channel=channel,
            address_sealed=address_sealed,
            conversation=conversation,
            payload=message.to_dict(),
            priority=priority,
            dedup_key=f"{invitation_id}:{dedup}:{order}",
            invitation_id=invitation_id,
            order=order,
            now=now,
            not_before=held,
        )
        for order, message in enumerate(messages)
    ]


async def drop_held(ctx: Context, session: AsyncSession, invitation: Invitation) -> None:
    """The citizen is answering: an invitation or reminder of this survey still held for the
    end of quiet hours would only repeat a question already answered, so it never goes."""
    await outbox.retire_unsent(
        session,
        OutboxMessage.invitation_id == invitation.id,
        OutboxMessage.priority == outbox.PRIORITY_INVITATION,
        OutboxMessage.status == "pending",
        OutboxMessage.available_at > ctx.clock(),
        status="cancelled",
        reason="answered while held",
        now=ctx.clock(),
    )


def reply(
    ctx: Context, session: AsyncSession, channel: str, address: str, conversation: str,
    language: str | None, message: str,
) -> None:  # fmt: skip
    text = gettext(normalise_language(language or ctx.settings.default_language), message)
    outbox.enqueue(session, ctx.keys, channel=channel,
                   address_sealed=ctx.keys.seal(f"{channel}:{address}"),
                   conversation=conversation, payload=OutboundMessage(text).to_dict(),
                   priority=outbox.PRIORITY_REPLY, now=ctx.clock())  # fmt: skip


async def flooded(
    ctx: Context, session: AsyncSession, channel: str, address: str, conversation: str,
    language: str | None,
) -> bool:  # fmt: skip
    """Take one event from the chat's bucket; when it is spent, True, and the first time in
    a notice window one polite reply (committed here) asks the citizen to slow down."""
    settings = ctx.settings
    if not settings.rate_limits_enabled:
        return False
    decision = await ctx.coordinator.limiter.take(
        ctx.limit_name("chat", conversation),
        settings.chat_rate_per_second,
        settings.chat_burst,
    )
    if decision.allowed:
        return False
    window = settings.chat_slowdown_notice_seconds
    if await ctx.coordinator.first_time(ctx.limit_name("slowdown", conversation), window):
        reply(ctx, session, channel, address, conversation, language, SLOW_DOWN)
        await session.commit()
        ctx.notify()
    return True
