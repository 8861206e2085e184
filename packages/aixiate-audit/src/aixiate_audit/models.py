from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from aixiate_core.db import UTCDateTime, utc_now
from sqlalchemy import JSON, Column
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


class AuditEvent(SQLModel, table=True):
    """One security-relevant fact. ``actor_id``/``target_id`` carry no foreign keys on
    purpose: events must outlive the users they are about."""

    __tablename__ = "audit_event"

    id: UUID = Field(default_factory=uuid4, primary_key=True)
    occurred_at: datetime = Field(
        default_factory=utc_now, sa_type=UTCDateTime, nullable=False, index=True
    )
    event_type: str = Field(max_length=100, index=True)
    actor_id: UUID | None = Field(default=None, index=True)
    target_type: str | None = Field(default=None, max_length=50)
    target_id: str | None = Field(default=None, max_length=100, index=True)
    ip: str | None = Field(default=None, max_length=45)
    user_agent: str | None = Field(default=None, max_length=512)
    request_id: str | None = Field(default=None, max_length=128, index=True)
    success: bool = True
    reason: str | None = Field(default=None, max_length=100)
    data: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    )
