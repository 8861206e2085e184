"""Login sessions, rotating refresh tokens, and revocation that every replica sees at once.

The database is the record; the shared key-value store says, per session, whether its
access tokens may still be used, so that checking a token costs no database round trip.
Revocation writes the database and marks the session revoked in the store before the
transaction commits (erring towards logging someone out, never towards letting a
revoked token through). A store miss falls back to the database and refills the store.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from aixiate_core.crypto import new_token, token_digest
from aixiate_core.db import utc_now
from aixiate_core.store import KeyValueStore
from sqlalchemy import delete, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth.models import AuthSession, RefreshToken
from aixiate_auth.settings import AuthSettings

_LIVE = b"1"
_REVOKED = b"0"


class Liveness:
    def __init__(self, store: KeyValueStore, settings: AuthSettings) -> None:
        self.store = store
        # A revocation must be remembered for as long as any access token of the
        # session can still pass the signature and expiry checks.
        self.ttl = settings.access_token_ttl_seconds + settings.jwt_leeway_seconds

    @staticmethod
    def _key(session_id: UUID) -> str:
        return f"auth:session:{session_id}"

    async def is_live_with(self, session_id: UUID, other: str) -> tuple[bool | None, bytes | None]:
        """:meth:`is_live` and the value of another key, in one round trip."""
        value, other_value = await self.store.get_many(self._key(session_id), other)
        return (None if value is None else value == _LIVE), other_value

    async def is_live(self, session_id: UUID) -> bool | None:
        """True or False when the store knows; None on a miss."""
        value = await self.store.get(self._key(session_id))
        if value is None:
            return None
        return value == _LIVE

    async def mark_live(self, session_id: UUID, seconds_left: float) -> None:
        # Only where the store knows nothing: a revocation may have landed since the
        # caller read the session as live, and "revoked" must never be overwritten.
        await self.store.set_if_absent(
            self._key(session_id), _LIVE, ttl=max(1.0, min(self.ttl, seconds_left))
        )

    async def mark_revoked(self, session_ids: Sequence[UUID]) -> None:
        for session_id in session_ids:
            await self.store.set(self._key(session_id), _REVOKED, ttl=self.ttl)


@dataclass(frozen=True, slots=True)
class Issued:
    session: AuthSession
    refresh_token: str

    def refresh_expires_in(self, now: datetime) -> int:
        return max(0, int((self.session.idle_expires_at - now).total_seconds()))


class RefreshRejected(Exception):
    """Unknown, expired or revoked: answered as an invalid token.

    ``reason`` and the session (when the token is ours) are for the audit log only."""

    def __init__(self, reason: str, auth_session: AuthSession | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.session_id = auth_session.id if auth_session else None
        self.user_id = auth_session.user_id if auth_session else None


class RefreshReused(Exception):
    """An already-rotated token came back: the session is presumed stolen."""

    def __init__(self, session_id: UUID) -> None:
        super().__init__(str(session_id))
        self.session_id = session_id


def is_usable(auth_session: AuthSession, now: datetime) -> bool:
    return (
        auth_session.revoked_at is None
        and auth_session.expires_at > now
        and auth_session.idle_expires_at > now
    )


def seconds_left(auth_session: AuthSession, now: datetime) -> float:
    end = min(auth_session.expires_at, auth_session.idle_expires_at)
    return (end - now).total_seconds()


async def start(
    session: AsyncSession,
    settings: AuthSettings,
    liveness: Liveness,
    *,
    user_id: UUID,
    ip: str | None,
    user_agent: str | None,
) -> Issued:
    now = utc_now()
    expires_at = now + timedelta(seconds=settings.session_absolute_ttl_seconds)
    auth_session = AuthSession(
        user_id=user_id,
        created_at=now,
        last_used_at=now,
        expires_at=expires_at,
        idle_expires_at=min(
            expires_at, now + timedelta(seconds=settings.refresh_token_ttl_seconds)
        ),
        ip=ip,
        user_agent=user_agent[:512] if user_agent else None,
    )
    session.add(auth_session)
    raw = new_token()
    session.add(RefreshToken(session_id=auth_session.id, token_hash=token_digest(raw)))
    await session.flush()
    await liveness.mark_live(auth_session.id, seconds_left(auth_session, now))
    return Issued(auth_session, raw)


async def rotate(
    session: AsyncSession, settings: AuthSettings, liveness: Liveness, raw: str
) -> Issued:
    """Swaps a live refresh token for a new one.

    One conditional UPDATE decides the race: of several concurrent uses of one token,
    exactly one finds it unrotated. The others (and any later use) see a rotated
    token, which is reuse.
    """
    now = utc_now()
    digest = token_digest(raw)
    claimed = (
        await session.exec(
            update(RefreshToken)
            .where(col(RefreshToken.token_hash) == digest)
            .where(col(RefreshToken.rotated_at).is_(None))
            .values(rotated_at=now, updated_at=now)
            .returning(col(RefreshToken.session_id))
        )
    ).scalar_one_or_none()
    if claimed is None:
        known = (
            await session.exec(
                select(RefreshToken.session_id).where(col(RefreshToken.token_hash) == digest)
            )
        ).first()
        if known is not None:
            raise RefreshReused(known)
        raise RefreshRejected("unknown_token")
    auth_session = await session.get(AuthSession, claimed)
    if auth_session is None:
        raise RefreshRejected("unknown_token")
    if not is_usable(auth_session, now):
        reason = "session_revoked" if auth_session.revoked_at is not None else "session_expired"
        raise RefreshRejected(reason, auth_session)
    auth_session.idle_expires_at = min(
        auth_session.expires_at, now + timedelta(seconds=settings.refresh_token_ttl_seconds)
    )
    auth_session.last_used_at = now
    session.add(auth_session)
    new_raw = new_token()
    session.add(RefreshToken(session_id=auth_session.id, token_hash=token_digest(new_raw)))
    await session.flush()
    await liveness.mark_live(auth_session.id, seconds_left(auth_session, now))
    return Issued(auth_session, new_raw)


async def revoke(
    session: AsyncSession, liveness: Liveness, session_ids: Sequence[UUID], reason: str
) -> list[UUID]:
    """Revokes the given sessions that are still live; returns those it revoked."""
    if not session_ids:
        return []
    now = utc_now()
    revoked = list(
        (
            await session.exec(
                update(AuthSession)
                .where(col(AuthSession.id).in_(session_ids))
                .where(col(AuthSession.revoked_at).is_(None))
                .values(revoked_at=now, revoke_reason=reason, updated_at=now)
                .returning(col(AuthSession.id))
            )
        ).scalars()
    )
    # Mark every requested id, not only the ones this call flipped: a concurrent
    # revocation of the same session must not leave a "live" entry behind.
    await liveness.mark_revoked(session_ids)
    return revoked


async def revoke_all(
    session: AsyncSession,
    liveness: Liveness,
    user_id: UUID,
    reason: str,
    *,
    keep: UUID | None = None,
) -> list[UUID]:
    statement = select(AuthSession.id).where(
        col(AuthSession.user_id) == user_id, col(AuthSession.revoked_at).is_(None)
    )
    ids = [sid for sid in (await session.exec(statement)).all() if sid != keep]
    return await revoke(session, liveness, ids, reason)


async def active(session: AsyncSession, user_id: UUID) -> list[AuthSession]:
    now = utc_now()
    statement = (
        select(AuthSession)
        .where(col(AuthSession.user_id) == user_id)
        .where(col(AuthSession.revoked_at).is_(None))
        .where(col(AuthSession.expires_at) > now)
        .where(col(AuthSession.idle_expires_at) > now)
        .order_by(col(AuthSession.last_used_at).desc())
    )
    return list((await session.exec(statement)).all())


async def check_live(session: AsyncSession, liveness: Liveness, session_id: UUID) -> bool:
    """The database's answer for a store miss, written back to the store."""
    now = utc_now()
    auth_session = await session.get(AuthSession, session_id)
    left: float | None = None
    if auth_session is not None and is_usable(auth_session, now):
        left = seconds_left(auth_session, now)
    # The read is over: end its transaction before talking to the store, so that no
    # database lock (SQLite takes its write lock at BEGIN) waits on the store's answer.
    await session.rollback()
    if left is None:
        await liveness.mark_revoked([session_id])
        return False
    await liveness.mark_live(session_id, left)
    return True


async def touch(session: AsyncSession, session_id: UUID) -> None:
    now = utc_now()
    await session.exec(
        update(AuthSession).where(col(AuthSession.id) == session_id).values(last_used_at=now)
    )


async def purge(session: AsyncSession, now: datetime) -> int:
    """Housekeeping: sessions ended (expired or revoked) over a week ago go, with their
    refresh tokens (by cascade); a week keeps recent history for "active sessions"
    investigations and reuse detection of late replays."""
    cutoff = now - timedelta(days=7)
    result = await session.exec(
        delete(AuthSession).where(
            or_(
                col(AuthSession.expires_at) < cutoff,
                col(AuthSession.idle_expires_at) < cutoff,
                col(AuthSession.revoked_at) < cutoff,
            )
        )
    )
    return int(result.rowcount)
