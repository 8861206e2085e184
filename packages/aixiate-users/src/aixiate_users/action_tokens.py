"""Single-use tokens sent by email: verification, password reset, email change.

The raw token exists only in the email; the table holds its SHA-256. Issuing a token
retires the user's earlier unused tokens of the same purpose. Consuming is one
conditional UPDATE, so of two concurrent uses of one token exactly one wins. The queries
are :class:`~aixiate_users.repository.ActionTokenRepository`'s.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from aixiate_core.crypto import new_token, token_digest
from aixiate_core.db import utc_now
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_users.models import ActionToken
from aixiate_users.repository import ActionTokenRepository


class TokenPurpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105 - a purpose, not a secret
    CHANGE_EMAIL = "change_email"
    INVITE = "invite"


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
    tokens = ActionTokenRepository(session)
    await tokens.retire_unused(user_id, [purpose.value], now)
    raw = new_token()
    await tokens.add(
        ActionToken(
            user_id=user_id,
            purpose=purpose.value,
            token_hash=token_digest(raw),
            expires_at=now + ttl,
            data=dict(data or {}),
        )
    )
    return raw


async def retire(session: AsyncSession, *, user_id: UUID, purposes: Iterable[TokenPurpose]) -> None:
    """Makes the user's unused tokens of ``purposes`` unusable, e.g. the reset links that
    went to an address the account no longer has."""
    await ActionTokenRepository(session).retire_unused(
        user_id, [purpose.value for purpose in purposes], utc_now()
    )


async def consume(session: AsyncSession, raw: str, purpose: TokenPurpose) -> ActionToken | None:
    """Marks the token used and returns it; None when unknown, used, expired or of
    another purpose (callers answer all of these alike)."""
    return await ActionTokenRepository(session).claim(token_digest(raw), purpose.value, utc_now())


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
    token = await ActionTokenRepository(session).get_by_hash(token_digest(raw))
    if token is None:
        return Refusal("unknown_token")
    if token.purpose != purpose.value:
        return Refusal("wrong_purpose", token.user_id)
    if token.used_at is not None:
        return Refusal("used", token.user_id)
    return Refusal("expired", token.user_id)


async def purge(session: AsyncSession, now: datetime) -> int:
    """Housekeeping: tokens that can no longer be used (spent or expired a day ago)."""
    return await ActionTokenRepository(session).delete_spent_before(now - timedelta(days=1))
