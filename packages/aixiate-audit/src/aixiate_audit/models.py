from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from aixiate_core.db import UTCDateTime, utc_now
from sqlalchemy import JSON, BigInteger, Column, Connection, Index, event, inspect, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session, UOWTransaction
from sqlmodel import Field, SQLModel, col

from aixiate_audit.chain import APPEND_LOCK_KEY, GENESIS_HASH, compute_hash

TABLE_NAME = "audit_event"


class AuditEvent(SQLModel, table=True):
    """One security-relevant fact. ``actor_id``/``target_id`` carry no foreign keys on
    purpose: events must outlive the users they are about.

    ``seq``, ``prev_hash`` and ``hash`` chain the events (see :mod:`aixiate_audit.chain`);
    they are filled in when the event is flushed, never by hand. The primary key includes
    ``occurred_at`` because PostgreSQL partitions the table by month on it, and a
    partitioned table's unique keys must contain the partition key.
    """

    __tablename__ = TABLE_NAME
    __table_args__ = (
        # Newest first, for the admin list and every keyset page.
        Index("ix_audit_event_occurred_at_id", "occurred_at", "id"),
        # The filters, each followed by the order column.
        Index("ix_audit_event_actor_id_occurred_at", "actor_id", "occurred_at"),
        Index("ix_audit_event_target_id_occurred_at", "target_id", "occurred_at"),
        Index("ix_audit_event_event_type_occurred_at", "event_type", "occurred_at"),
        Index("ix_audit_event_request_id", "request_id"),
        # Unique where the database can enforce it; on PostgreSQL a unique index on a
        # table partitioned by occurred_at would have to include it, so there the index is
        # plain and the append lock keeps seq unique (verify reports duplicates).
        Index("ix_audit_event_seq", "seq", unique=True),
    )

    id: UUID = Field(default_factory=uuid4, primary_key=True)
    occurred_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime, primary_key=True)
    seq: int = Field(default=0, sa_type=BigInteger, nullable=False)
    prev_hash: str = Field(default="", max_length=64, nullable=False)
    hash: str = Field(default="", max_length=64, nullable=False)
    event_type: str = Field(max_length=100)
    actor_id: UUID | None = Field(default=None)
    target_type: str | None = Field(default=None, max_length=50)
    target_id: str | None = Field(default=None, max_length=100)
    ip: str | None = Field(default=None, max_length=45)
    user_agent: str | None = Field(default=None, max_length=512)
    request_id: str | None = Field(default=None, max_length=128)
    success: bool = True
    reason: str | None = Field(default=None, max_length=100)
    data: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    )


def append_to_chain(connection: Connection, events: list[AuditEvent]) -> None:
    """Links ``events`` (in this order) to the chain's head, inside the caller's transaction.

    PostgreSQL: a transaction-scoped advisory lock serializes appenders until the
    inserting transaction commits or rolls back. It serializes audit appends only; other
    tables see no extra locking. SQLite has one writer at a time: taking the write lock
    before reading the head does the same.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": APPEND_LOCK_KEY})
    elif dialect == "sqlite":
        # A write that changes nothing still takes SQLite's write lock (waiting up to the
        # busy timeout), so no other writer can move the head between read and insert.
        connection.execute(text(f"UPDATE {TABLE_NAME} SET seq = seq WHERE 0 = 1"))  # noqa: S608
    head = connection.execute(
        select(col(AuditEvent.seq), col(AuditEvent.hash), col(AuditEvent.occurred_at))
        .order_by(col(AuditEvent.seq).desc())
        .limit(1)
    ).first()
    seq, prev_hash, last_time = 0, GENESIS_HASH, None
    if head is not None:
        seq, prev_hash, last_time = head.seq, head.hash, head.occurred_at
    for audit_event in events:
        seq += 1
        # occurred_at never goes backwards along the chain: month partitions then hold
        # contiguous runs of seq, and dropping the oldest one leaves a verifiable chain.
        if last_time is not None and audit_event.occurred_at < last_time:
            audit_event.occurred_at = last_time
        audit_event.seq = seq
        audit_event.prev_hash = prev_hash
        audit_event.hash = compute_hash(audit_event)
        prev_hash, last_time = audit_event.hash, audit_event.occurred_at


@event.listens_for(Session, "before_flush")
def _chain_new_events(session: Session, _flush: UOWTransaction, _instances: object) -> None:
    # Whoever adds an AuditEvent (record, record_now, a script) gets it chained at flush.
    pending = [obj for obj in session.new if isinstance(obj, AuditEvent) and not obj.hash]
    if pending:
        pending.sort(key=lambda obj: inspect(obj).insert_order)
        append_to_chain(session.connection(), pending)
