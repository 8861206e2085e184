"""Password forgot, reset and change.

Forgot answers the same for every address; reset and change end sessions (all of them,
or all but the caller's) and tell the owner by email. A refused reset token or a wrong
current password is audited in a transaction of its own, since the request's rolls back.
"""

from dataclasses import dataclass
from uuid import UUID

from aixiate_audit import service as audit_service
from aixiate_core.db import end_read, utc_now
from aixiate_core.outbox import Outbox
from aixiate_core.security import Principal
from aixiate_users import action_tokens
from aixiate_users.action_tokens import TokenPurpose
from aixiate_users.errors import InvalidActionToken, InvalidPassword
from aixiate_users.models import User
from aixiate_users.passwords import Passwords
from aixiate_users.repository import UserRepository
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth.lockout import Lockout
from aixiate_auth.services.sessions import SessionService
from aixiate_auth.settings import AuthSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryService:
    settings: AuthSettings
    passwords: Passwords
    lockout: Lockout
    sessions: SessionService
    outbox: Outbox
    sessionmaker: async_sessionmaker[AsyncSession]

    async def forgot(self, session: AsyncSession, *, email: str) -> None:
        user = await UserRepository(session).get_by_email(email)
        if user is None or not user.is_active:
            return
        token = await action_tokens.issue(
            session,
            user_id=user.id,
            purpose=TokenPurpose.RESET_PASSWORD,
            ttl=self.settings.password_reset_ttl,
        )
        await self.outbox.enqueue(
            session,
            to=user.email,
            template="password_reset",
            context={
                "name": user.full_name,
                "link": self.outbox.link("reset-password", token),
                "expires_minutes": self.settings.password_reset_ttl_seconds // 60,
            },
        )
        await audit_service.record(
            session,
            "auth.password.forgot",
            actor_id=user.id,
            target_type="user",
            target_id=user.id,
        )

    async def reset(self, session: AsyncSession, *, token: str, new_password: str) -> None:
        used = await action_tokens.consume(session, token, TokenPurpose.RESET_PASSWORD)
        if used is None:
            refusal = await action_tokens.refusal(session, token, TokenPurpose.RESET_PASSWORD)
            await self._reset_failed(session, refusal.reason, refusal.user_id)
            raise InvalidActionToken()
        user = await UserRepository(session).get(used.user_id)
        if user is None or not user.is_active:
            reason = "unknown_user" if user is None else "inactive"
            await self._reset_failed(session, reason, used.user_id)
            raise InvalidActionToken()
        # A policy failure raises and rolls the consumed token back: it can be used again.
        self.passwords.check_policy(new_password, email=user.email)
        await self._set_password(session, user, new_password)
        # Only the mailbox owner could read the link, so the address is proven too.
        user.is_verified = True
        # ... and the guesses a lockout stopped were against the old password.
        await self.lockout.unlock(user.email)
        revoked = await self.sessions.revoke_all(session, user.id, "password_reset")
        await self.outbox.enqueue(
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

    async def _reset_failed(self, session: AsyncSession, reason: str, user_id: UUID | None) -> None:
        # Why the token was refused goes to the audit log only; the caller hears "invalid".
        await audit_service.record_failure(
            session,
            self.sessionmaker,
            "auth.password.reset.failed",
            user_id=user_id,
            reason=reason,
        )

    async def change(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        current_password: str,
        new_password: str,
    ) -> None:
        user = await UserRepository(session).get(principal.user_id)
        if user is None:
            raise InvalidPassword()
        await end_read(session)
        check = await self.passwords.verify(current_password, user.password_hash)
        if not check.valid:
            await audit_service.record_now(
                self.sessionmaker,
                "auth.password.change.failed",
                actor_id=user.id,
                target_type="user",
                target_id=user.id,
                success=False,
                reason="bad_password",
            )
            raise InvalidPassword()
        self.passwords.check_policy(new_password, email=user.email)
        await self._set_password(session, user, new_password)
        revoked = await self.sessions.revoke_all(
            session, user.id, "password_changed", keep=principal.session_id
        )
        await self.outbox.enqueue(
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

    async def _set_password(self, session: AsyncSession, user: User, password: str) -> None:
        user.password_hash = await self.passwords.hash(password)
        user.password_changed_at = utc_now()
        session.add(user)
        await session.flush()
