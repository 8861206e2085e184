"""Social login: users' identities at external providers.

Revision ID: 8c1f0b7d2e35
Revises: 5e2d8c4a7f19
Create Date: 2026-12-07 22:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8c1f0b7d2e35"
down_revision: str | None = "5e2d8c4a7f19"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oauth_identity",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("oauth_identity_user_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("oauth_identity_pkey")),
        sa.UniqueConstraint(
            "provider", "subject", name=op.f("oauth_identity_provider_subject_key")
        ),
        sa.UniqueConstraint(
            "user_id", "provider", name=op.f("oauth_identity_user_id_provider_key")
        ),
    )
    with op.batch_alter_table("oauth_identity", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oauth_identity_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("oauth_identity", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_identity_user_id"))
    op.drop_table("oauth_identity")
