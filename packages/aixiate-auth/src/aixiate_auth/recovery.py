"""Password forgot, reset and change.

Forgot answers the same for every address; reset and change end sessions (all of them,
or all but the caller's) and tell the owner by email. A refused reset token or a wrong
current password is audited in a transaction of its own, since the request's rolls back.
"""

from uuid import UUID

from aixiate_audit import service as audit_service
from aixiate_core.db import utc_now
from aixiate_core.outbox import Outbox
from aixiate_core.security import Principal
from aixiate_users.action_tokens import TokenPurpose
from aixiate_users.action_tokens import consume as consume_token
from aixiate_users.action_tokens import issue as issue_token
from aixiate_users.action_tokens import refusal as token_refusal
from aixiate_users.models import User
from aixiate_users.repository import UserRepository
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth import sessions
from aixiate_auth.errors import InvalidCurrentPassword, InvalidOrExpiredToken
from aixiate_auth.runtime import AuthRuntime


async def forgot(
    session: AsyncSession, runtime: AuthRuntime, outbox: Outbox, *, email: str
) -> None:
    user = await UserRepository(session).get_by_email(email)
    if user is None or not user.is_active:
        return
    token = await issue_token(
        session,
        user_id=user.id,
        purpose=TokenPurpose.RESET_PASSWORD,
        ttl=runtime.settings.password_reset_ttl,
    )
    await outbox.enqueue(
        session,
        to=user.email,
        template="password_reset",
        context={
            "name": user.full_name,
            "link": outbox.link("reset-password", token),
            "expires_minutes": runtime.settings.password_reset_ttl_seconds // 60,
        },
    )
    await audit_service.record(
        session, "auth.password.forgot", actor_id=user.id, target_type="user", target_id=user.id
    )


async def reset(
    session: AsyncSession, runtime: AuthRuntime, outbox: Outbox, *, token: str, new_password: str
) -> None:
    used = await consume_token(session, token, TokenPurpose.RESET_PASSWORD)
    if used is None:
        refusal = await token_refusal(session, token, TokenPurpose.RESET_PASSWORD)
        await _reset_failed(session, runtime, refusal.reason, refusal.user_id)
        raise InvalidOrExpiredToken()
    user = await session.get(User, used.user_id)
    if user is None or not user.is_active:
        reason = "unknown_user" if user is None else "inactive"
        await _reset_failed(session, runtime, reason, used.user_id)
        raise InvalidOrExpiredToken()
    # A policy failure raises and rolls the consumed token back: it can be used again.
    runtime.passwords.check_policy(new_password, email=user.email)
    await _set_password(session, runtime, user, new_password)
    # Only the mailbox owner could read the link, so the address is proven too.
    user.is_verified = True
    # ... and the guesses a lockout stopped were against the old password.
    await runtime.lockout.unlock(user.email)
    revoked = await sessions.revoke_all(session, runtime.liveness, user.id, "password_reset")
    await outbox.enqueue(
        session, to=user.email, template="password_changed", context={"name": user.full_name}
    )
    await audit_service.record(
        session,
        "auth.password.reset",
        actor_id=user.id,
        target_type="user",
        target_id=user.id,
        data={"sessions_revoked": len(revoked)},
    )


async def _reset_failed(
    session: AsyncSession, runtime: AuthRuntime, reason: str, user_id: UUID | None
) -> None:
    # Why the token was refused goes to the audit log only; the caller hears "invalid".
    await audit_service.record_failure(
        session,
        runtime.state["sessionmaker"],
        "auth.password.reset.failed",
        user_id=user_id,
        reason=reason,
    )


async def change(
    session: AsyncSession,
    runtime: AuthRuntime,
    outbox: Outbox,
    principal: Principal,
    *,
    current_password: str,
    new_password: str,
) -> None:
    user = await session.get(User, principal.user_id)
    if user is None:
        raise InvalidCurrentPassword()
    # As in login: end the read before the slow verification, so that nothing (a pooled
    # connection, SQLite's write lock) is held while the password is hashed.
    await session.commit()
    check = await runtime.passwords.verify(current_password, user.password_hash)
    if not check.valid:
        await audit_service.record_now(
            runtime.state["sessionmaker"],
            "auth.password.change.failed",
            actor_id=user.id,
            target_type="user",
            target_id=user.id,
            success=False,
            reason="bad_password",
        )
        raise InvalidCurrentPassword()
    runtime.passwords.check_policy(new_password, email=user.email)
    await _set_password(session, runtime, user, new_password)
    revoked = await sessions.revoke_all(
        session, runtime.liveness, user.id, "password_changed", keep=principal.session_id
    )
    await outbox.enqueue(
        session, to=user.email, template="password_changed", context={"name": user.full_name}
    )
    await audit_service.record(
        session,
        "auth.password.changed",
        actor_id=user.id,
        target_type="user",
        target_id=user.id,
        data={"sessions_revoked": len(revoked)},
    )


async def _set_password(
    session: AsyncSession, runtime: AuthRuntime, user: User, password: str
) -> None:
    user.password_hash = await runtime.passwords.hash(password)
    user.password_changed_at = utc_now()
    session.add(user)
    await session.flush()
