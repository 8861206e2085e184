from datetime import datetime
from typing import Any
from uuid import UUID

from aixiate_core.db import TableBase, UTCDateTime, utc_now
from sqlalchemy import JSON, Column, ForeignKey, LargeBinary, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field


class SigningKey(TableBase, table=True):
    """An asymmetric JWT signing key; the private half is sealed under the secret key.

    The key with the highest ``generation`` that is not retired signs; retired keys stay
    in the JWKS until the last token they signed has expired (``retired_at`` + access
    token lifetime).
    """

    __tablename__ = "signing_key"

    kid: str = Field(max_length=64, unique=True)
    # Unique: two replicas creating the first key at once cannot both succeed.
    generation: int = Field(unique=True)
    algorithm: str = Field(max_length=16)
    public_jwk: dict[str, Any] = Field(
        sa_column=Column(JSON().with_variant(JSONB(), "postgresql"), nullable=False)
    )
    private_key: bytes = Field(sa_type=LargeBinary, nullable=False)
    retired_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AuthSession(TableBase, table=True):
    """One login: what a user sees in "active sessions" and can revoke.

    ``idle_expires_at`` slides forward on every refresh; ``expires_at`` never moves.
    """

    __tablename__ = "auth_session"

    user_id: UUID = Field(
        sa_column=Column(
            Uuid(), ForeignKey("user_account.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    last_used_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    idle_expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    ip: str | None = Field(default=None, max_length=45)
    user_agent: str | None = Field(default=None, max_length=512)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoke_reason: str | None = Field(default=None, max_length=32)


class RefreshToken(TableBase, table=True):
    """Every refresh token a session was given, by SHA-256. One is live (not rotated);
    the rotated ones stay until the session ends, so presenting one again is detected
    as reuse."""

    __tablename__ = "refresh_token"

    session_id: UUID = Field(
        sa_column=Column(
            Uuid(), ForeignKey("auth_session.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    token_hash: str = Field(max_length=64, unique=True)
    rotated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
