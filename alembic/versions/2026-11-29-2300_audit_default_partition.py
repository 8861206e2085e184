"""Audit log: a default partition on PostgreSQL.

An event whose month has no partition yet (housekeeping stopped for months, or a clock
far ahead) lands in ``audit_event_default`` instead of failing the request that records
it. Housekeeping moves such rows into their month's partition when it creates it.

Revision ID: 9b7e3d51c0a4
Revises: 4f1c2a9e7b30
Create Date: 2026-11-29 23:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9b7e3d51c0a4"
down_revision: str | None = "4f1c2a9e7b30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "audit_event"
DEFAULT = f"{TABLE}_default"


def _partitioned() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    found = bind.execute(
        sa.text("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(:t)"),
        {"t": TABLE},
    )
    return found.first() is not None


def upgrade() -> None:
    if _partitioned():
        op.execute(f'CREATE TABLE IF NOT EXISTS "{DEFAULT}" PARTITION OF "{TABLE}" DEFAULT')


def downgrade() -> None:
    if not _partitioned():
        return
    count = sa.text(f'SELECT count(*) FROM "{DEFAULT}"')  # noqa: S608 - a constant name
    stranded = op.get_bind().execute(count).scalar()
    if stranded:
        # Dropping them would cut events out of the chain; their months need partitions.
        raise RuntimeError(
            f"{DEFAULT} holds {stranded} events: run `aixiate audit prune` (which creates "
            "their months' partitions and moves them) before downgrading"
        )
    op.execute(f'DROP TABLE "{DEFAULT}"')
