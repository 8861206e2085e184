"""Single-use tokens sent by email: verification, password reset, email change.

The raw token exists only in the email; the table holds its SHA-256. Issuing a token
retires the user's earlier unused tokens of the same purpose. Consuming is one
conditional UPDATE, so of two concurrent uses of one token exactly one wins.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from aixiate_core.crypto import new_token, token_digest
from aixiate_core.db import utc_now
from sqlalchemy import delete, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_users.models import ActionToken


class TokenPurpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105 - a purpose, not a secret
    CHANGE_EMAIL = "change_email"


async def issue(
    session: AsyncSession,
    *,
    user_id: UUID,
    purpose: TokenPurpose,
    ttl: timedelta,
    data: Mapping[str, Any] | None = None,
) -> str:
    """Returns the raw token, to be put in an email and nowhere else."""
    now = utc_now()
    await session.exec(
        update(ActionToken)
        .where(col(ActionToken.user_id) == user_id)
        .where(col(ActionToken.purpose) == purpose.value)
        .where(col(ActionToken.used_at).is_(None))
        .values(used_at=now, updated_at=now)
    )
    raw = new_token()
    session.add(
        ActionToken(
            user_id=user_id,
            purpose=purpose.value,
            token_hash=token_digest(raw),
            expires_at=now + ttl,
            data=dict(data or {}),
        )
    )
    await session.flush()
    return raw


async def retire(session: AsyncSession, *, user_id: UUID, purposes: Iterable[TokenPurpose]) -> None:
    """Makes the user's unused tokens of ``purposes`` unusable, e.g. the reset links that
    went to an address the account no longer has."""
    now = utc_now()
    await session.exec(
        update(ActionToken)
        .where(col(ActionToken.user_id) == user_id)
        .where(col(ActionToken.purpose).in_([purpose.value for purpose in purposes]))
        .where(col(ActionToken.used_at).is_(None))
        .values(used_at=now, updated_at=now)
    )


async def consume(session: AsyncSession, raw: str, purpose: TokenPurpose) -> ActionToken | None:
    """Marks the token used and returns it; None when unknown, used, expired or of
    another purpose (callers answer all of these alike)."""
    now = utc_now()
    result = await session.exec(
        update(ActionToken)
        .where(col(ActionToken.token_hash) == token_digest(raw))
        .where(col(ActionToken.purpose) == purpose.value)
        .where(col(ActionToken.used_at).is_(None))
        .where(col(ActionToken.expires_at) > now)
        .values(used_at=now, updated_at=now)
        .returning(col(ActionToken.id))
    )
    token_id = result.scalar_one_or_none()
    if token_id is None:
        return None
    return await session.get(ActionToken, token_id)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why :func:`consume` refused a token, for the audit log and never for the client."""

    #: ``unknown_token``, ``wrong_purpose``, ``used`` (spent, or retired by a newer
    #: token or an address change) or ``expired``.
    reason: str
    #: The owner of the token, when the token is ours.
    user_id: UUID | None = None


async def refusal(session: AsyncSession, raw: str, purpose: TokenPurpose) -> Refusal:
    """Explains a ``None`` from :func:`consume` with the same raw token."""
    token = (
        await session.exec(
            select(ActionToken).where(col(ActionToken.token_hash) == token_digest(raw))
        )
    ).first()
    if token is None:
        return Refusal("unknown_token")
    if token.purpose != purpose.value:
        return Refusal("wrong_purpose", token.user_id)
    if token.used_at is not None:
        return Refusal("used", token.user_id)
    return Refusal("expired", token.user_id)


async def purge(session: AsyncSession, now: datetime) -> int:
    """Housekeeping: tokens that can no longer be used (spent or expired a day ago)."""
    cutoff = now - timedelta(days=1)
    result = await session.exec(
        delete(ActionToken).where(
            or_(col(ActionToken.expires_at) < cutoff, col(ActionToken.used_at) < cutoff)
        )
    )
    return int(result.rowcount)
