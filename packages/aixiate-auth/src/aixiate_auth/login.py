"""Login, refresh, logout and session management: the services behind the /auth routes.

Failed attempts are audited in a transaction of their own (the request's rolls back
with the error); everything else joins the request's unit of work.
"""

from uuid import UUID

import structlog
from aixiate_audit import service as audit_service
from aixiate_core.context import current_request
from aixiate_core.db import utc_now
from aixiate_core.outbox import Outbox
from aixiate_core.security import Principal
from aixiate_users.models import User
from aixiate_users.repository import UserRepository
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth import lockout, sessions
from aixiate_auth.errors import (
    AccountInactive,
    EmailNotVerified,
    InvalidCredentials,
    InvalidRefreshToken,
    SessionNotFound,
    TokenReused,
)
from aixiate_auth.models import AuthSession
from aixiate_auth.runtime import AuthRuntime
from aixiate_auth.schemas import TokenPair

log = structlog.get_logger()


async def _failed(runtime: AuthRuntime, reason: str, user: User | None) -> None:
    await audit_service.record_now(
        runtime.state["sessionmaker"],
        "auth.login.failed",
        actor_id=user.id if user else None,
        target_type="user" if user else None,
        target_id=user.id if user else None,
        success=False,
        reason=reason,
    )


def _pair(runtime: AuthRuntime, issued: sessions.Issued, roles: frozenset[str]) -> TokenPair:
    token, expires = runtime.issue_access_token(issued, roles)
    now = utc_now()
    return TokenPair(
        access_token=token,
        refresh_token=issued.refresh_token,
        expires_in=max(0, expires - int(now.timestamp())),
        refresh_expires_in=issued.refresh_expires_in(now),
    )


async def login(
    session: AsyncSession, runtime: AuthRuntime, *, email: str, password: str
) -> TokenPair:
    user = await UserRepository(session).get_by_email(email)
    # End the read-only transaction before the slow verification, so that no connection
    # (PostgreSQL) or write lock (SQLite, whose transactions begin IMMEDIATE) is held
    # while the password waits for a hash worker. Nothing is written yet.
    await session.commit()
    # Locks hold for unknown addresses too, and are checked before any hashing.
    if (locked_for := await runtime.lockout.locked_for(email)) is not None:
        await _failed(runtime, "locked", user)
        raise lockout.AccountLocked(locked_for)
    # Unknown users are verified against a dummy hash: same work, same timing.
    check = await runtime.passwords.verify(password, user.password_hash if user else None)
    if user is None or not check.valid:
        await _failed(runtime, "unknown_user" if user is None else "bad_password", user)
        await lockout.record_failure(runtime, email, user)  # raises once this one locks
        raise InvalidCredentials()
    if not user.is_active:
        await _failed(runtime, "inactive", user)
        raise AccountInactive()
    if runtime.settings.require_email_verification and not user.is_verified:
        await _failed(runtime, "unverified", user)
        raise EmailNotVerified()
    if check.new_hash is not None:
        user.password_hash = check.new_hash
        session.add(user)
    await runtime.lockout.succeeded(email)
    request = current_request()
    issued = await sessions.start(
        session,
        runtime.settings,
        runtime.liveness,
        user_id=user.id,
        ip=request.ip if request else None,
        user_agent=request.user_agent if request else None,
    )
    await audit_service.record(
        session,
        "auth.login.succeeded",
        actor_id=user.id,
        target_type="user",
        target_id=user.id,
        data={"session_id": str(issued.session.id), "rehashed": check.new_hash is not None},
    )
    return _pair(runtime, issued, user.role_set)


async def refresh(
    session: AsyncSession, runtime: AuthRuntime, outbox: Outbox, *, refresh_token: str
) -> TokenPair:
    try:
        issued = await sessions.rotate(session, runtime.settings, runtime.liveness, refresh_token)
    except sessions.RefreshReused as reuse:
        await _revoke_reused(session, runtime, outbox, reuse.session_id)
        raise TokenReused() from None
    except sessions.RefreshRejected as rejected:
        await _refresh_failed(
            session, runtime, rejected.reason, rejected.user_id, rejected.session_id
        )
        raise InvalidRefreshToken() from None
    user = await session.get(User, issued.session.user_id)
    if user is None or not user.is_active:
        await _refresh_failed(
            session,
            runtime,
            "unknown_user" if user is None else "inactive",
            issued.session.user_id,
            issued.session.id,
        )
        raise InvalidRefreshToken()
    await audit_service.record(
        session,
        "auth.refresh.succeeded",
        actor_id=user.id,
        target_type="session",
        target_id=issued.session.id,
    )
    return _pair(runtime, issued, user.role_set)


async def _refresh_failed(
    session: AsyncSession,
    runtime: AuthRuntime,
    reason: str,
    user_id: UUID | None,
    session_id: UUID | None,
) -> None:
    # The rotation this request claimed rolls back with it; the event must not.
    await audit_service.record_failure(
        session,
        runtime.state["sessionmaker"],
        "auth.refresh.failed",
        user_id=user_id,
        reason=reason,
        data={"session_id": str(session_id)} if session_id else None,
    )


async def _revoke_reused(
    session: AsyncSession, runtime: AuthRuntime, outbox: Outbox, session_id: UUID
) -> None:
    # The request fails, so its transaction rolls back; the revocation, its event and the
    # warning email must commit regardless. Release the request's locks first (SQLite
    # allows one writer), then write in a transaction of our own.
    await session.rollback()
    async with runtime.state["sessionmaker"]() as own, own.begin():
        revoked = await sessions.revoke(own, runtime.liveness, [session_id], "refresh_reused")
        auth_session = await own.get(AuthSession, session_id)
        user = await own.get(User, auth_session.user_id) if auth_session else None
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
            await outbox.enqueue(
                own, to=user.email, template="session_reuse", context={"name": user.full_name}
            )
    log.warning("auth.refresh.reused", session_id=str(session_id))


async def logout(session: AsyncSession, runtime: AuthRuntime, principal: Principal) -> None:
    await sessions.revoke(session, runtime.liveness, [principal.session_id], "logout")
    await audit_service.record(
        session,
        "auth.logout",
        actor_id=principal.user_id,
        target_type="session",
        target_id=principal.session_id,
    )


async def logout_all(session: AsyncSession, runtime: AuthRuntime, principal: Principal) -> None:
    revoked = await sessions.revoke_all(session, runtime.liveness, principal.user_id, "logout_all")
    await audit_service.record(
        session,
        "auth.logout_all",
        actor_id=principal.user_id,
        target_type="user",
        target_id=principal.user_id,
        data={"sessions_revoked": len(revoked)},
    )


async def list_sessions(session: AsyncSession, principal: Principal) -> list[AuthSession]:
    return await sessions.active(session, principal.user_id)


async def revoke_session(
    session: AsyncSession, runtime: AuthRuntime, principal: Principal, session_id: UUID
) -> None:
    target = await session.get(AuthSession, session_id)
    # Another user's session is answered exactly like a missing one.
    if target is None or target.user_id != principal.user_id or target.revoked_at is not None:
        raise SessionNotFound()
    await sessions.revoke(session, runtime.liveness, [session_id], "user_revoked")
    await audit_service.record(
        session,
        "auth.session.revoked",
        actor_id=principal.user_id,
        target_type="session",
        target_id=session_id,
    )
