"""``/audit``: the admin's view of the audit log: query, single events, chain check."""

from typing import Annotated
from uuid import UUID

from aixiate_core.db import SessionDep
from aixiate_core.errors import problem_responses
from aixiate_core.security import AdminPrincipal
from fastapi import APIRouter, Path, Query

from aixiate_audit import service as audit_service
from aixiate_audit.errors import AuditEventNotFound, InvalidCursor
from aixiate_audit.models import AuditEvent
from aixiate_audit.schemas import AuditEventQuery, AuditEventRead, AuditPage, VerifyResult

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get(
    "/events",
    response_model=AuditPage,
    responses=problem_responses(InvalidCursor, admin=True),
)
async def list_events(
    query: Annotated[AuditEventQuery, Query()], _admin: AdminPrincipal, session: SessionDep
) -> AuditPage:
    """Audit events, newest first, one page at a time (role `admin`).

    Filters combine: `event_type` (exact, or a prefix such as `auth.*`), `actor_id`,
    `target_id`, `success`, `since` (inclusive) and `until` (exclusive) on `occurred_at`,
    and `request_id` (the `X-Request-ID` of the request that caused the event). Pass the
    page's `next_cursor` back as `cursor`, with the same filters; pages stay exact while
    new events are written."""
    return await audit_service.list_events(session, query)


@router.get(
    "/events/{event_id}",
    response_model=AuditEventRead,
    responses=problem_responses(AuditEventNotFound, admin=True),
)
async def read_event(
    event_id: Annotated[UUID, Path(description="The event's id.")],
    _admin: AdminPrincipal,
    session: SessionDep,
) -> AuditEvent:
    """One audit event (role `admin`)."""
    return await audit_service.get_event(session, event_id)


@router.get(
    "/verify",
    response_model=VerifyResult,
    responses=problem_responses(admin=True, validation=False),
)
async def verify_chain(_admin: AdminPrincipal, session: SessionDep) -> VerifyResult:
    """Recomputes the tamper-evident chain from the oldest kept event on (role `admin`).

    `ok: false` names the first event that was altered (`hash_mismatch`) or that follows
    a deleted or inserted one (`seq_gap`, `prev_hash_mismatch`). The work grows with the
    size of the log; it reads in batches and holds nothing else up."""
    result = await audit_service.verify(session)
    return VerifyResult(
        ok=result.ok,
        checked=result.checked,
        first_bad_id=result.first_bad_id,
        problem=result.problem,
        head_seq=result.head_seq,
        head_hash=result.head_hash,
    )
