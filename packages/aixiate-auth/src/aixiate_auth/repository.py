"""Every query of the auth package. Built from a session; methods take domain arguments."""

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import delete, func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth.models import AuthSession, RefreshToken, SigningKey


class SessionRepository:
    """Login sessions and the refresh tokens each was given."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, session_id: UUID) -> AuthSession | None:
        return await self.session.get(AuthSession, session_id)

    async def add(self, auth_session: AuthSession, refresh_token_hash: str) -> None:
        await self.add_refresh_token(auth_session, refresh_token_hash)

    async def add_refresh_token(self, auth_session: AuthSession, token_hash: str) -> None:
        """Stores the session (new or changed) with one more refresh token."""
        self.session.add(auth_session)
        self.session.add(RefreshToken(session_id=auth_session.id, token_hash=token_hash))
        await self.session.flush()

    async def claim_refresh_token(self, token_hash: str, now: datetime) -> UUID | None:
        """Marks the token rotated and returns its session, or None when it is unknown or
        was already rotated. One conditional UPDATE, so of several concurrent uses of one
        token exactly one claims it."""
        result = await self.session.exec(
            update(RefreshToken)
            .where(col(RefreshToken.token_hash) == token_hash)
            .where(col(RefreshToken.rotated_at).is_(None))
            .values(rotated_at=now, updated_at=now)
            .returning(col(RefreshToken.session_id))
        )
        claimed: UUID | None = result.scalar_one_or_none()
        return claimed

    async def session_of_refresh_token(self, token_hash: str) -> UUID | None:
        statement = select(RefreshToken.session_id).where(
            col(RefreshToken.token_hash) == token_hash
        )
        return (await self.session.exec(statement)).first()

    async def revoke(self, session_ids: Sequence[UUID], reason: str, now: datetime) -> list[UUID]:
        """Revokes those of the sessions still live; returns the ones it revoked."""
        result = await self.session.exec(
            update(AuthSession)
            .where(col(AuthSession.id).in_(session_ids))
            .where(col(AuthSession.revoked_at).is_(None))
            .values(revoked_at=now, revoke_reason=reason, updated_at=now)
            .returning(col(AuthSession.id))
        )
        return list(result.scalars())

    async def unrevoked_ids(self, user_id: UUID) -> list[UUID]:
        statement = select(AuthSession.id).where(
            col(AuthSession.user_id) == user_id, col(AuthSession.revoked_at).is_(None)
        )
        return list((await self.session.exec(statement)).all())

    async def active(self, user_id: UUID, now: datetime) -> list[AuthSession]:
        """The user's usable sessions, most recently used first."""
        statement = (
            select(AuthSession)
            .where(col(AuthSession.user_id) == user_id)
            .where(col(AuthSession.revoked_at).is_(None))
            .where(col(AuthSession.expires_at) > now)
            .where(col(AuthSession.idle_expires_at) > now)
            .order_by(col(AuthSession.last_used_at).desc())
        )
        return list((await self.session.exec(statement)).all())

    async def touch(self, session_id: UUID, now: datetime) -> None:
        await self.session.exec(
            update(AuthSession).where(col(AuthSession.id) == session_id).values(last_used_at=now)
        )

    async def purge_ended_before(self, cutoff: datetime) -> int:
        """Deletes sessions that expired or were revoked before ``cutoff``, with their
        refresh tokens (by cascade)."""
        result = await self.session.exec(
            delete(AuthSession).where(
                or_(
                    col(AuthSession.expires_at) < cutoff,
                    col(AuthSession.idle_expires_at) < cutoff,
                    col(AuthSession.revoked_at) < cutoff,
                )
            )
        )
        return int(result.rowcount)


class SigningKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def verifying(self, retired_after: datetime) -> list[SigningKey]:
        """Active keys and keys retired after ``retired_after``, oldest generation first."""
        statement = (
            select(SigningKey)
            .where(
                or_(
                    col(SigningKey.retired_at).is_(None),
                    col(SigningKey.retired_at) > retired_after,
                )
            )
            .order_by(col(SigningKey.generation))
        )
        return list((await self.session.exec(statement)).all())

    async def active(self) -> list[SigningKey]:
        statement = select(SigningKey).where(col(SigningKey.retired_at).is_(None))
        return list((await self.session.exec(statement)).all())

    async def latest_generation(self) -> int:
        latest = (await self.session.exec(select(func.max(SigningKey.generation)))).one()
        return int(latest or 0)

    async def add(self, key: SigningKey) -> None:
        self.session.add(key)
        await self.session.flush()
