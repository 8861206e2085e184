from datetime import datetime
from typing import Any
from uuid import UUID

from aixiate_core.db import TableBase, UTCDateTime
from sqlalchemy import JSON, Column, ForeignKey, Index, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field


class User(TableBase, table=True):
    # "user" is reserved in PostgreSQL.
    __tablename__ = "user_account"

    # Stored normalized (trimmed, lower-case), so the plain unique index is the
    # case-insensitive uniqueness the database enforces, also under concurrent inserts.
    email: str = Field(max_length=320, unique=True, index=False)
    password_hash: str | None = Field(default=None, max_length=255)
    full_name: str | None = Field(default=None, max_length=200)
    roles: list[str] = Field(
        default_factory=list,
        sa_column=Column(JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    )
    is_active: bool = True
    is_verified: bool = False
    mfa_enabled: bool = False
    password_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(self.roles)


class ActionToken(TableBase, table=True):
    """A single-use token sent by email (verification, password reset, email change).

    Only the SHA-256 of the token is stored; the token itself exists only in the email.
    """

    __tablename__ = "action_token"
    __table_args__ = (Index("ix_action_token_user_purpose", "user_id", "purpose"),)

    user_id: UUID = Field(
        sa_column=Column(Uuid(), ForeignKey("user_account.id", ondelete="CASCADE"), nullable=False)
    )
    purpose: str = Field(max_length=32)
    token_hash: str = Field(max_length=64, unique=True)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    data: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    )
