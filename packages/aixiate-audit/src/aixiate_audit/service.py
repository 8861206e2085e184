"""Recording audit events, and reading them back.

:func:`record` joins the caller's transaction, so a change and its event commit or roll
back together. :func:`record_now` commits on its own, for events about failures whose
surrounding transaction is about to roll back. On SQLite, which has one writer at a time,
call it before the request's own session has written anything.

Every event passes the central scrubber (:mod:`aixiate_core.scrub`) on the way in: no
password, token, hash, secret or code reaches ``data`` or ``reason``, whatever a caller
passes. Each event is chained when it is flushed (:mod:`aixiate_audit.chain`) and is
logged as an ``audit.event`` line with the same fields.

On PostgreSQL, :func:`record` takes the chain's append lock in the caller's transaction,
held until that transaction ends: audit appends are serialized (that is what makes the
chain a chain), nothing else is. Record the event as late in a unit of work as is
natural, and keep work after it short.
"""

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import structlog
from aixiate_core.context import current_request
from aixiate_core.events import EmailDeliveryFailed
from aixiate_core.ratelimit import RateLimitExceeded
from aixiate_core.scrub import scrub, scrub_text
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_audit.chain import Verification
from aixiate_audit.errors import AuditEventNotFound
from aixiate_audit.models import AuditEvent
from aixiate_audit.repository import AuditRepository, EventFilter
from aixiate_audit.schemas import AuditEventQuery, AuditEventRead, AuditPage, PageQuery

log = structlog.get_logger()

_MAX_USER_AGENT = 512
#: ``session.info`` key: events recorded in the open transaction, logged at its commit.
_UNLOGGED = "aixiate.audit.unlogged"
_MAX_REASON = 100


def _json_safe(value: Any) -> Any:
    """``data`` as JSON stores it (dicts, lists, strings, numbers), so the hash computed
    before the insert is the hash of what is read back."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return value
    return str(value)


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
        reason=scrub_text(reason)[:_MAX_REASON] if reason else None,
        data=_json_safe(scrub(dict(data or {}))),
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
    # Logged once the caller's transaction commits: a rolled-back event was never recorded.
    session.sync_session.info.setdefault(_UNLOGGED, []).append(event)
    return event


async def record_own(
    session: AsyncSession,
    event_type: str,
    user_id: UUID,
    *,
    data: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """:func:`record` of something a user did to their own account (its actor and
    target), in the caller's unit of work; :func:`record_failure` is its refusal."""
    return await record(
        session, event_type, actor_id=user_id, target_type="user", target_id=user_id, data=data
    )


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


async def record_failure(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    event_type: str,
    *,
    user_id: UUID | None,
    reason: str,
    data: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """:func:`record_now` (``success=False``) for a unit of work that is about to fail,
    about ``user_id``'s own account (its actor and target; None when no account is known).

    Rolls ``session`` back first, as the failing request would anyway: its open
    transaction holds SQLite's write lock (taken at BEGIN) and, once it recorded an event,
    the chain's append lock, either of which the audit transaction would wait on. The
    rollback expires the session's objects, so pass ids, not objects read afterwards.
    """
    await session.rollback()
    return await record_now(
        sessionmaker,
        event_type,
        actor_id=user_id,
        target_type="user" if user_id else None,
        target_id=user_id,
        success=False,
        reason=reason,
        data=data,
    )


@sa_event.listens_for(Session, "after_commit")
def _log_committed(session: Session) -> None:
    for event in session.info.pop(_UNLOGGED, []):
        _log(event)


@sa_event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, previous: SessionTransaction) -> None:
    # A savepoint rolling back leaves what was recorded before it to commit or not.
    if not previous.nested:
        session.info.pop(_UNLOGGED, None)


def _log(event: AuditEvent) -> None:
    # The same fields as the event's JSON (data is already scrubbed), plus its place in
    # the chain. request_id is the request's own, as on every line of that request.
    log.info(
        "audit.event",
        event_id=str(event.id),
        occurred_at=event.occurred_at.isoformat(),
        event_type=event.event_type,
        actor_id=str(event.actor_id) if event.actor_id else None,
        target_type=event.target_type,
        target_id=event.target_id,
        ip=event.ip,
        user_agent=event.user_agent,
        request_id=event.request_id,
        success=event.success,
        reason=event.reason,
        data=event.data,
        seq=event.seq,
    )


# --- reading ----------------------------------------------------------------------------


async def list_events(session: AsyncSession, query: AuditEventQuery) -> AuditPage:
    where = EventFilter(
        event_type=query.event_type,
        actor_id=query.actor_id,
        target_id=query.target_id,
        success=query.success,
        since=query.since,
        until=query.until,
        request_id=query.request_id,
    )
    found = await AuditRepository(session).list_page(where, limit=query.limit, cursor=query.cursor)
    return AuditPage(
        items=[AuditEventRead.model_validate(e) for e in found.events],
        next_cursor=found.next_cursor,
    )


async def get_event(session: AsyncSession, event_id: UUID) -> AuditEvent:
    event = await AuditRepository(session).get(event_id)
    if event is None:
        raise AuditEventNotFound()
    return event


async def security_events(session: AsyncSession, user_id: UUID, query: PageQuery) -> AuditPage:
    """The events about one user (as actor or target), for the user to see.

    What belongs to someone else is left out: when another user acted (an admin changing
    the account), their id, address and browser are blanked; the event itself stays.
    """
    found = await AuditRepository(session).list_page(
        EventFilter(about_user=user_id), limit=query.limit, cursor=query.cursor
    )
    items = []
    for event in found.events:
        item = AuditEventRead.model_validate(event)
        if event.actor_id is not None and event.actor_id != user_id:
            item = item.model_copy(update={"actor_id": None, "ip": None, "user_agent": None})
        items.append(item)
    return AuditPage(items=items, next_cursor=found.next_cursor)


async def verify(session: AsyncSession) -> Verification:
    return await AuditRepository(session).verify_chain()


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
