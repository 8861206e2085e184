"""Login sessions: starting one, rotating its refresh token, ending it.

A refresh token works once: each refresh swaps it for a new one, and presenting a rotated
token again ends the whole session (someone may have copied it), tells the owner by
email, and is audited. Revocation reaches every replica at once through
:class:`~aixiate_auth.liveness.Liveness`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import structlog
from aixiate_audit import service as audit_service
from aixiate_core.context import current_request
from aixiate_core.crypto import new_token, token_digest
from aixiate_core.db import own_transaction, utc_now
from aixiate_core.outbox import Outbox
from aixiate_core.security import Principal
from aixiate_users.models import User
from aixiate_users.repository import UserRepository
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth.access_tokens import encode_access_token
from aixiate_auth.errors import InvalidRefreshToken, SessionNotFound, TokenReused
from aixiate_auth.keys import KeyRing
from aixiate_auth.liveness import Liveness
from aixiate_auth.models import AuthSession
from aixiate_auth.repository import SessionRepository
from aixiate_auth.schemas import TokenPair
from aixiate_auth.settings import AuthSettings

log = structlog.get_logger()

#: Ended sessions are kept this long: recent history for "active sessions"
#: investigations, and reuse detection of late replays.
ENDED_SESSION_RETENTION = timedelta(days=7)


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


async def check_live(session: AsyncSession, liveness: Liveness, session_id: UUID) -> bool:
    """The database's answer for a store miss, written back to the store."""
    now = utc_now()
    auth_session = await SessionRepository(session).get(session_id)
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


async def purge(session: AsyncSession, now: datetime) -> int:
    """Housekeeping: sessions ended over a week ago go, with their refresh tokens."""
    return await SessionRepository(session).purge_ended_before(now - ENDED_SESSION_RETENTION)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionService:
    settings: AuthSettings
    keyring: KeyRing
    liveness: Liveness
    outbox: Outbox
    sessionmaker: async_sessionmaker[AsyncSession]

    # --- issuing ----------------------------------------------------------------------

    async def start(
        self, session: AsyncSession, user: User, *, amr: Sequence[str] = ("pwd",)
    ) -> tuple[TokenPair, AuthSession]:
        """A new session for ``user`` (who has just proven who they are, by ``amr``: RFC
        8176 method names) and its tokens."""
        now = utc_now()
        request = current_request()
        expires_at = now + timedelta(seconds=self.settings.session_absolute_ttl_seconds)
        user_agent = request.user_agent if request else None
        auth_session = AuthSession(
            user_id=user.id,
            created_at=now,
            last_used_at=now,
            expires_at=expires_at,
            idle_expires_at=min(
                expires_at, now + timedelta(seconds=self.settings.refresh_token_ttl_seconds)
            ),
            ip=request.ip if request else None,
            user_agent=user_agent[:512] if user_agent else None,
            amr=" ".join(amr),
        )
        raw = new_token()
        await SessionRepository(session).add(auth_session, token_digest(raw))
        await self.liveness.mark_live(auth_session.id, seconds_left(auth_session, now))
        return self._pair(Issued(auth_session, raw), user.role_set), auth_session

    async def sign_in(
        self, session: AsyncSession, user: User, *, amr: Sequence[str], **details: object
    ) -> TokenPair:
        """:meth:`start`, with the ``auth.login.succeeded`` event that every way in
        (password, second step, provider, invitation) records; ``details`` join its data."""
        pair, auth_session = await self.start(session, user, amr=amr)
        await audit_service.record_own(
            session,
            "auth.login.succeeded",
            user.id,
            data={"session_id": str(auth_session.id), "amr": list(amr), **details},
        )
        return pair

    def _pair(self, issued: Issued, roles: frozenset[str]) -> TokenPair:
        key = self.keyring.signing_key()
        token, expires = encode_access_token(
            self.settings,
            kid=key.kid,
            key=key.key,
            user_id=issued.session.user_id,
            session_id=issued.session.id,
            roles=roles,
            amr=issued.session.methods,
        )
        now = utc_now()
        return TokenPair(
            access_token=token,
            refresh_token=issued.refresh_token,
            expires_in=max(0, expires - int(now.timestamp())),
            refresh_expires_in=issued.refresh_expires_in(now),
        )

    # --- refresh-token rotation -------------------------------------------------------

    async def refresh(self, session: AsyncSession, refresh_token: str) -> TokenPair:
        try:
            issued = await self._rotate(session, refresh_token)
        except RefreshReused as reuse:
            await self._revoke_reused(session, reuse.session_id)
            raise TokenReused() from None
        except RefreshRejected as rejected:
            await self._refresh_failed(
                session, rejected.reason, rejected.user_id, rejected.session_id
            )
            raise InvalidRefreshToken() from None
        user = await UserRepository(session).get(issued.session.user_id)
        if user is None or not user.is_active:
            reason = "unknown_user" if user is None else "inactive"
            await self._refresh_failed(session, reason, issued.session.user_id, issued.session.id)
            raise InvalidRefreshToken()
        await audit_service.record(
            session,
            "auth.refresh.succeeded",
            actor_id=user.id,
            target_type="session",
            target_id=issued.session.id,
        )
        return self._pair(issued, user.role_set)

    async def _rotate(self, session: AsyncSession, raw: str) -> Issued:
        """Swaps a live refresh token for a new one. Of several concurrent uses of one
        token exactly one claims it; the others (and any later use) are reuse."""
        now = utc_now()
        digest = token_digest(raw)
        repository = SessionRepository(session)
        claimed = await repository.claim_refresh_token(digest, now)
        if claimed is None:
            known = await repository.session_of_refresh_token(digest)
            if known is not None:
                raise RefreshReused(known)
            raise RefreshRejected("unknown_token")
        auth_session = await repository.get(claimed)
        if auth_session is None:
            raise RefreshRejected("unknown_token")
        if not is_usable(auth_session, now):
            reason = "session_revoked" if auth_session.revoked_at is not None else "session_expired"
            raise RefreshRejected(reason, auth_session)
        auth_session.idle_expires_at = min(
            auth_session.expires_at,
            now + timedelta(seconds=self.settings.refresh_token_ttl_seconds),
        )
        auth_session.last_used_at = now
        new_raw = new_token()
        await repository.add_refresh_token(auth_session, token_digest(new_raw))
        await self.liveness.mark_live(auth_session.id, seconds_left(auth_session, now))
        return Issued(auth_session, new_raw)

    async def _refresh_failed(
        self, session: AsyncSession, reason: str, user_id: UUID | None, session_id: UUID | None
    ) -> None:
        # The rotation this request claimed rolls back with it; the event must not.
        await audit_service.record_failure(
            session,
            self.sessionmaker,
            "auth.refresh.failed",
            user_id=user_id,
            reason=reason,
            data={"session_id": str(session_id)} if session_id else None,
        )

    async def _revoke_reused(self, session: AsyncSession, session_id: UUID) -> None:
        # The request fails, so its transaction rolls back; the revocation, its event and
        # the warning email must commit regardless. Release the request's locks first
        # (SQLite allows one writer), then write in a transaction of our own.
        await session.rollback()
        async with own_transaction(self.sessionmaker) as own:
            revoked = await self.revoke(own, [session_id], "refresh_reused")
            auth_session = await SessionRepository(own).get(session_id)
            user = await UserRepository(own).get(auth_session.user_id) if auth_session else None
            await audit_service.record(
                own,
                "auth.refresh.reused",
                actor_id=user.id if user else None,
                target_type="session",
                target_id=session_id,
                success=False,
                reason="refresh_token_reused",
            )
            if user is not None and revoked:
                await self.outbox.enqueue(
                    own, to=user.email, template="session_reuse", context={"name": user.full_name}
                )
        log.warning("auth.refresh.reused", session_id=str(session_id))

    # --- ending sessions --------------------------------------------------------------

    async def revoke(
        self, session: AsyncSession, session_ids: Sequence[UUID], reason: str
    ) -> list[UUID]:
        """Revokes the given sessions that are still live; returns those it revoked."""
        if not session_ids:
            return []
        revoked = await SessionRepository(session).revoke(session_ids, reason, utc_now())
        # Mark every requested id, not only the ones this call flipped: a concurrent
        # revocation of the same session must not leave a "live" entry behind.
        await self.liveness.mark_revoked(session_ids)
        return revoked

    async def revoke_all(
        self, session: AsyncSession, user_id: UUID, reason: str, *, keep: UUID | None = None
    ) -> list[UUID]:
        ids = await SessionRepository(session).unrevoked_ids(user_id)
        return await self.revoke(session, [sid for sid in ids if sid != keep], reason)

    async def logout(self, session: AsyncSession, principal: Principal) -> None:
        await self.revoke(session, [principal.session_id], "logout")
        await audit_service.record(
            session,
            "auth.logout",
            actor_id=principal.user_id,
            target_type="session",
            target_id=principal.session_id,
        )

    async def logout_by_refresh_token(self, session: AsyncSession, refresh_token: str) -> None:
        """Cookie transport's logout: ends the session the refresh token belongs to (a
        rotated one too: it can only come from that session's cookie jar)."""
        repository = SessionRepository(session)
        session_id = await repository.session_of_refresh_token(token_digest(refresh_token))
        auth_session = await repository.get(session_id) if session_id else None
        if auth_session is None or auth_session.revoked_at is not None:
            return
        await self.revoke(session, [auth_session.id], "logout")
        await audit_service.record(
            session,
            "auth.logout",
            actor_id=auth_session.user_id,
            target_type="session",
            target_id=auth_session.id,
            data={"transport": "cookie"},
        )

    async def logout_all(self, session: AsyncSession, principal: Principal) -> None:
        revoked = await self.revoke_all(session, principal.user_id, "logout_all")
        await audit_service.record_own(
            session, "auth.logout_all", principal.user_id, data={"sessions_revoked": len(revoked)}
        )

    async def list_active(self, session: AsyncSession, principal: Principal) -> list[AuthSession]:
        return await SessionRepository(session).active(principal.user_id, utc_now())

    async def revoke_own(
        self, session: AsyncSession, principal: Principal, session_id: UUID
    ) -> None:
        target = await SessionRepository(session).get(session_id)
        # Another user's session is answered exactly like a missing one.
        if target is None or target.user_id != principal.user_id or target.revoked_at is not None:
            raise SessionNotFound()
        await self.revoke(session, [session_id], "user_revoked")
        await audit_service.record(
            session,
            "auth.session.revoked",
            actor_id=principal.user_id,
            target_type="session",
            target_id=session_id,
        )
