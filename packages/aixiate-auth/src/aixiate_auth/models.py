from datetime import datetime
from typing import Any
from uuid import UUID

from aixiate_core.db import TableBase, UTCDateTime, utc_now
from sqlalchemy import JSON, BigInteger, Column, ForeignKey, LargeBinary, UniqueConstraint, Uuid
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
    # How the login was proven (RFC 8176 amr, space-separated); every access token of the
    # session, refreshed ones included, carries it.
    amr: str = Field(default="pwd", max_length=64, sa_column_kwargs={"server_default": "pwd"})

    @property
    def methods(self) -> list[str]:
        return self.amr.split()


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


class TotpCredential(TableBase, table=True):
    """A user's TOTP secret, sealed under the secret key. Pending until a first code
    confirms it (``confirmed_at``); at most one per user, so a new setup replaces it.

    ``last_step`` is the 30-second step of the last code accepted: a code is accepted
    only for a later step, with one conditional UPDATE, so a code cannot be replayed
    on any replica.
    """

    __tablename__ = "mfa_totp"

    user_id: UUID = Field(
        sa_column=Column(
            Uuid(), ForeignKey("user_account.id", ondelete="CASCADE"), nullable=False, unique=True
        )
    )
    secret: bytes = Field(sa_type=LargeBinary, nullable=False)
    confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_step: int | None = Field(default=None, sa_type=BigInteger)


class RecoveryCode(TableBase, table=True):
    """One single-use recovery code, by SHA-256: the codes are random, so a plain digest
    keeps them as safe as the tokens."""

    __tablename__ = "mfa_recovery_code"

    user_id: UUID = Field(
        sa_column=Column(
            Uuid(), ForeignKey("user_account.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    code_hash: str = Field(max_length=64)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class OAuthIdentity(TableBase, table=True):
    """An account at an external provider that signs in as one of our users. Keyed by
    (provider, subject), never by email: an address can change hands at a provider, a
    subject cannot. One identity per provider and user."""

    __tablename__ = "oauth_identity"
    __table_args__ = (
        UniqueConstraint("provider", "subject", name="oauth_identity_provider_subject_key"),
        UniqueConstraint("user_id", "provider", name="oauth_identity_user_id_provider_key"),
    )

    user_id: UUID = Field(
        sa_column=Column(
            Uuid(), ForeignKey("user_account.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    provider: str = Field(max_length=32)
    subject: str = Field(max_length=255)
    # The address the provider reported when the identity was linked (for the owner's
    # list only; never used to find an account).
    email: str | None = Field(default=None, max_length=320)
