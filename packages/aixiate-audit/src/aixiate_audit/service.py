"""Recording audit events.

:func:`record` joins the caller's transaction, so a change and its event commit or roll
back together. :func:`record_now` commits on its own, for events about failures whose
surrounding transaction is about to roll back. On SQLite, which has one writer at a time,
call it before the request's own session has written anything.
"""

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import structlog
from aixiate_core.context import current_request
from aixiate_core.events import EmailDeliveryFailed
from aixiate_core.ratelimit import RateLimitExceeded
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_audit.models import AuditEvent

log = structlog.get_logger()

_MAX_USER_AGENT = 512


def build_event(
    event_type: str,
    *,
    actor_id: UUID | None = None,
    target_type: str | None = None,
    target_id: UUID | str | None = None,
    success: bool = True,
    reason: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> AuditEvent:
    request = current_request()
    user_agent = request.user_agent if request else None
    return AuditEvent(
        event_type=event_type,
        actor_id=actor_id,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        success=success,
        reason=reason,
        data=dict(data or {}),
        ip=request.ip if request else None,
        user_agent=user_agent[:_MAX_USER_AGENT] if user_agent else None,
        request_id=request.request_id if request else None,
    )


async def record(
    session: AsyncSession,
    event_type: str,
    *,
    actor_id: UUID | None = None,
    target_type: str | None = None,
    target_id: UUID | str | None = None,
    success: bool = True,
    reason: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> AuditEvent:
    event = build_event(
        event_type,
        actor_id=actor_id,
        target_type=target_type,
        target_id=target_id,
        success=success,
        reason=reason,
        data=data,
    )
    session.add(event)
    await session.flush()
    _log(event)
    return event


async def record_now(
    sessionmaker: async_sessionmaker[AsyncSession],
    event_type: str,
    *,
    actor_id: UUID | None = None,
    target_type: str | None = None,
    target_id: UUID | str | None = None,
    success: bool = False,
    reason: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> AuditEvent:
    event = build_event(
        event_type,
        actor_id=actor_id,
        target_type=target_type,
        target_id=target_id,
        success=success,
        reason=reason,
        data=data,
    )
    async with sessionmaker() as session, session.begin():
        session.add(event)
    _log(event)
    return event


def _log(event: AuditEvent) -> None:
    log.info(
        "audit.event",
        event_id=str(event.id),
        event_type=event.event_type,
        actor_id=str(event.actor_id) if event.actor_id else None,
        target_type=event.target_type,
        target_id=event.target_id,
        success=event.success,
        reason=event.reason,
    )


async def on_email_delivery_failed(session: AsyncSession, event: EmailDeliveryFailed) -> None:
    """Subscribed to core's domain events: a message the outbox finally gave up on."""
    await record(
        session,
        "email.delivery.failed",
        target_type="email",
        target_id=event.message_id,
        success=False,
        reason=event.reason,
        data={"template": event.template, "attempts": event.attempts},
    )


async def on_rate_limited(session: AsyncSession, event: RateLimitExceeded) -> None:
    """Subscribed to core's domain events: a client ran out of a rate limit. Core
    publishes at most one per limit, key and window, so a flood stays one row."""
    await record(
        session,
        "security.rate_limited",
        success=False,
        reason=f"{event.name}.{event.scope}",
        data={"limit": event.name, "scope": event.scope, "policy": event.policy, "key": event.key},
    )
