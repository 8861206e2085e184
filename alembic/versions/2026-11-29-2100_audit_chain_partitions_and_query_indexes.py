"""Audit log: hash chain (seq, prev_hash, hash), query indexes, monthly partitions.

On PostgreSQL ``audit_event`` becomes range-partitioned by month on ``occurred_at``
(partitions ``audit_event_pYYYYMM``; the current month and the next three are created
here, housekeeping and ``aixiate audit prune`` create the later ones). Its primary key
becomes (id, occurred_at), as a partitioned table's keys must contain the partition key,
and the index on seq cannot be unique there (the append lock keeps seq unique).

Existing events are copied in time order and chained. The hashing below is a copy of
``aixiate_audit.chain.canonical_content`` as of this revision; migrations import no
package code.

Revision ID: 4f1c2a9e7b30
Revises: cd236430c19d
Create Date: 2026-11-29 21:00:00.000000+00:00
"""

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "4f1c2a9e7b30"
down_revision: str | None = "cd236430c19d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "audit_event"
MONTHS_AHEAD = 3
BATCH = 1000
GENESIS_HASH = "0" * 64
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

OLD_INDEXES = ("actor_id", "event_type", "occurred_at", "request_id", "target_id")
NEW_INDEXES: tuple[tuple[str, list[str], bool], ...] = (
    ("ix_audit_event_occurred_at_id", ["occurred_at", "id"], False),
    ("ix_audit_event_actor_id_occurred_at", ["actor_id", "occurred_at"], False),
    ("ix_audit_event_target_id_occurred_at", ["target_id", "occurred_at"], False),
    ("ix_audit_event_event_type_occurred_at", ["event_type", "occurred_at"], False),
    ("ix_audit_event_request_id", ["request_id"], False),
    ("ix_audit_event_seq", ["seq"], True),
)
CONTENT = (
    "id",
    "occurred_at",
    "event_type",
    "actor_id",
    "target_type",
    "target_id",
    "ip",
    "user_agent",
    "request_id",
    "success",
    "reason",
    "data",
)


def _content_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("target_type", sa.String(length=50), nullable=True),
        sa.Column("target_id", sa.String(length=100), nullable=True),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=True),
        sa.Column("data", JSON_TYPE, nullable=False),
    ]


def _chain_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
    ]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _hash(row: dict[str, Any]) -> str:
    content = {
        "id": str(row["id"]),
        "seq": row["seq"],
        "occurred_at": _utc(row["occurred_at"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "event_type": row["event_type"],
        "actor_id": None if row["actor_id"] is None else str(row["actor_id"]),
        "target_type": row["target_type"],
        "target_id": row["target_id"],
        "ip": row["ip"],
        "user_agent": row["user_agent"],
        "request_id": row["request_id"],
        "success": row["success"],
        "reason": row["reason"],
        "data": row["data"],
        "prev_hash": row["prev_hash"],
    }
    text = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _month(moment: datetime) -> datetime:
    moment = _utc(moment)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def _next(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def _create_partitions(first: datetime, last: datetime) -> None:
    start = _month(first)
    while start <= last:
        end = _next(start)
        name = f"{TABLE}_p{start.year:04d}{start.month:02d}"
        op.execute(
            f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{TABLE}" '
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
        start = end


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        for column in OLD_INDEXES:
            batch_op.drop_index(f"ix_audit_event_{column}")
    op.rename_table(TABLE, f"{TABLE}_old")
    if postgres:
        op.execute(f'ALTER INDEX "{TABLE}_pkey" RENAME TO "{TABLE}_old_pkey"')

    op.create_table(
        TABLE,
        *_content_columns(),
        *_chain_columns(),
        sa.PrimaryKeyConstraint("id", "occurred_at", name=op.f("audit_event_pkey")),
        **({"postgresql_partition_by": "RANGE (occurred_at)"} if postgres else {}),
    )
    old = sa.table(f"{TABLE}_old", *_content_columns())
    new = sa.table(TABLE, *_content_columns(), *_chain_columns())
    if postgres:
        first = bind.execute(sa.select(sa.func.min(old.c.occurred_at))).scalar()
        now = datetime.now(UTC)
        last = _month(now)
        for _ in range(MONTHS_AHEAD):
            last = _next(last)
        _create_partitions(min(_utc(first), now) if first else now, last)

    # Chain what is there, oldest first, in batches (keyset on the old primary order).
    seq, prev_hash = 0, GENESIS_HASH
    after: tuple[datetime, Any] | None = None
    while True:
        statement = sa.select(old).order_by(old.c.occurred_at, old.c.id).limit(BATCH)
        if after is not None:
            statement = statement.where(
                sa.tuple_(old.c.occurred_at, old.c.id) > sa.tuple_(*after)  # type: ignore[arg-type]
            )
        rows = [dict(row._mapping) for row in bind.execute(statement)]
        if not rows:
            break
        for row in rows:
            seq += 1
            row.update(seq=seq, prev_hash=prev_hash)
            row["hash"] = prev_hash = _hash(row)
        bind.execute(new.insert(), rows)
        after = (rows[-1]["occurred_at"], rows[-1]["id"])
    op.drop_table(f"{TABLE}_old")

    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        for name, columns, unique in NEW_INDEXES:
            # No unique index on seq alone over a table partitioned by occurred_at.
            batch_op.create_index(name, columns, unique=unique and not postgres)


def downgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        for name, _columns, _unique in NEW_INDEXES:
            batch_op.drop_index(name)
    op.rename_table(TABLE, f"{TABLE}_new")
    if postgres:
        op.execute(f'ALTER INDEX "{TABLE}_pkey" RENAME TO "{TABLE}_new_pkey"')
    op.create_table(
        TABLE,
        *_content_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("audit_event_pkey")),
    )
    source = sa.table(f"{TABLE}_new", *_content_columns())
    target = sa.table(TABLE, *_content_columns())
    bind.execute(target.insert().from_select(list(CONTENT), sa.select(source)))
    # On PostgreSQL this drops the partitions with their parent.
    op.drop_table(f"{TABLE}_new")
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        for column in OLD_INDEXES:
            batch_op.create_index(f"ix_audit_event_{column}", [column], unique=False)
