"""Every query of the auth package. Built from a session; methods take domain arguments."""

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import delete, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth.models import (
    AuthSession,
    OAuthIdentity,
    RecoveryCode,
    RefreshToken,
    SigningKey,
    TotpCredential,
)


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


class MfaRepository:
    """A user's TOTP credential and recovery codes."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def totp(self, user_id: UUID) -> TotpCredential | None:
        statement = select(TotpCredential).where(col(TotpCredential.user_id) == user_id)
        return (await self.session.exec(statement)).first()

    async def set_pending(self, user_id: UUID, sealed_secret: bytes) -> None:
        """A new unconfirmed secret, replacing any earlier one of the user's."""
        credential = await self.totp(user_id)
        if credential is None:
            credential = TotpCredential(user_id=user_id, secret=sealed_secret)
        else:
            credential.secret = sealed_secret
            credential.confirmed_at = None
            credential.last_step = None
        self.session.add(credential)
        await self.session.flush()

    async def accept_step(self, user_id: UUID, step: int, now: datetime) -> bool:
        """Records ``step`` as the last one used, unless it (or a later one) already was:
        one conditional UPDATE, so of two uses of a code exactly one gets True."""
        result = await self.session.exec(
            update(TotpCredential)
            .where(col(TotpCredential.user_id) == user_id)
            .where(
                or_(col(TotpCredential.last_step).is_(None), col(TotpCredential.last_step) < step)
            )
            .values(last_step=step, updated_at=now)
            .returning(col(TotpCredential.id))
        )
        return result.first() is not None

    async def unused_codes(self, user_id: UUID) -> list[RecoveryCode]:
        statement = select(RecoveryCode).where(
            col(RecoveryCode.user_id) == user_id, col(RecoveryCode.used_at).is_(None)
        )
        return list((await self.session.exec(statement)).all())

    async def count_unused_codes(self, user_id: UUID) -> int:
        statement = select(func.count()).where(
            col(RecoveryCode.user_id) == user_id, col(RecoveryCode.used_at).is_(None)
        )
        return int((await self.session.exec(statement)).one())

    async def use_code(self, code_id: UUID, now: datetime) -> bool:
        """Marks the code used; False when a concurrent request used it first."""
        result = await self.session.exec(
            update(RecoveryCode)
            .where(col(RecoveryCode.id) == code_id, col(RecoveryCode.used_at).is_(None))
            .values(used_at=now, updated_at=now)
            .returning(col(RecoveryCode.id))
        )
        return result.first() is not None

    async def replace_codes(self, user_id: UUID, code_hashes: Sequence[str]) -> None:
        await self.session.exec(delete(RecoveryCode).where(col(RecoveryCode.user_id) == user_id))
        self.session.add_all(RecoveryCode(user_id=user_id, code_hash=h) for h in code_hashes)
        await self.session.flush()

    async def remove_all(self, user_id: UUID) -> bool:
        """Deletes the TOTP credential and every recovery code; True when there was a
        confirmed credential."""
        removed = await self.session.exec(
            delete(TotpCredential)
            .where(col(TotpCredential.user_id) == user_id)
            .returning(col(TotpCredential.confirmed_at))
        )
        confirmed = any(value is not None for value in removed.scalars())
        await self.session.exec(delete(RecoveryCode).where(col(RecoveryCode.user_id) == user_id))
        return confirmed


class IdentityRepository:
    """Users' identities at external providers."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def find(self, provider: str, subject: str) -> OAuthIdentity | None:
        statement = select(OAuthIdentity).where(
            col(OAuthIdentity.provider) == provider, col(OAuthIdentity.subject) == subject
        )
        return (await self.session.exec(statement)).first()

    async def of_user(self, user_id: UUID) -> list[OAuthIdentity]:
        statement = (
            select(OAuthIdentity)
            .where(col(OAuthIdentity.user_id) == user_id)
            .order_by(col(OAuthIdentity.created_at))
        )
        return list((await self.session.exec(statement)).all())

    async def add(self, identity: OAuthIdentity) -> bool:
        """False when the provider identity, or this user's identity at that provider,
        exists already: the unique constraints decide, so concurrent links make one."""
        try:
            async with self.session.begin_nested():
                self.session.add(identity)
        except IntegrityError:
            return False
        return True

    async def remove(self, identity: OAuthIdentity) -> None:
        await self.session.delete(identity)
        await self.session.flush()
