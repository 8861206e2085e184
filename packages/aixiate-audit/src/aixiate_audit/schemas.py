"""Response bodies and query parameters of ``/audit`` (and of users' security events)."""

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from aixiate_core.schemas import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

EVENT_TYPE_PATTERN = r"^[a-z0-9_.]{1,100}(\.\*)?$"


class AuditEventRead(BaseModel):
    """One audit event, as `/audit/events` returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: UUID
    occurred_at: datetime
    event_type: str
    actor_id: UUID | None
    target_type: str | None
    target_id: str | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    success: bool
    reason: str | None
    data: dict[str, Any]


class AuditPage(Page[AuditEventRead]):
    """One page, newest first; pass ``next_cursor`` back as ``cursor`` (``null``: last page)."""


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("give a timezone (e.g. 2026-01-31T12:00:00Z)")
    return value


AwareDatetime = Annotated[datetime | None, AfterValidator(_aware)]
Cursor = Annotated[
    str | None,
    Field(max_length=512, description="The next_cursor of the previous page; omit for the first."),
]
Limit = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)]


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: Limit = DEFAULT_PAGE_SIZE
    cursor: Cursor = None


class AuditEventQuery(PageQuery):
    """Filters of ``GET /audit/events``; they combine (AND)."""

    event_type: Annotated[
        str | None,
        Field(
            pattern=EVENT_TYPE_PATTERN,
            description="An event type, or a prefix ending in `.*` (`auth.*`).",
        ),
    ] = None
    actor_id: UUID | None = None
    target_id: Annotated[str | None, Field(min_length=1, max_length=100)] = None
    success: bool | None = None
    since: Annotated[AwareDatetime, Field(description="Inclusive lower bound of occurred_at.")] = (
        None
    )
    until: Annotated[AwareDatetime, Field(description="Exclusive upper bound of occurred_at.")] = (
        None
    )
    request_id: Annotated[str | None, Field(min_length=1, max_length=128)] = None


class VerifyResult(BaseModel):
    """``ok`` false names the first event that was altered, inserted or follows a deletion."""

    ok: bool
    checked: int = Field(description="Events examined, oldest kept first.")
    first_bad_id: UUID | None
    problem: str | None = Field(
        default=None,
        description="hash_mismatch (altered), seq_gap / prev_hash_mismatch (deleted or "
        "inserted before it), seq_duplicate.",
    )
    head_seq: int | None = Field(default=None, description="The newest event checked.")
    head_hash: str | None = Field(
        default=None, description="Its hash: keep it elsewhere to anchor the chain."
    )
