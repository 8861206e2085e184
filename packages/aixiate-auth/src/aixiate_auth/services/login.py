"""Signing in with an email address and a password.

Unknown addresses and wrong passwords cost the same and answer the same. A refused
attempt is audited in a transaction of its own (the request's rolls back with the error)
and counts toward the account's lockout. For an account with MFA a correct password
yields a step-up challenge, not tokens, and leaves the lockout's failure count alone:
only the second step clears it.
"""

from dataclasses import dataclass

from aixiate_audit import service as audit_service
from aixiate_core.db import end_read
from aixiate_users.models import User
from aixiate_users.passwords import Passwords
from aixiate_users.repository import UserRepository
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth.errors import (
    AccountInactive,
    AccountLocked,
    EmailNotVerified,
    InvalidCredentials,
    MfaRequired,
)
from aixiate_auth.mfa import AMR_PASSWORD
from aixiate_auth.schemas import MfaChallenge, TokenPair
from aixiate_auth.services.lockout import LockoutService
from aixiate_auth.services.mfa import MfaService
from aixiate_auth.services.sessions import SessionService
from aixiate_auth.settings import AuthSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginService:
    settings: AuthSettings
    passwords: Passwords
    lockouts: LockoutService
    sessions: SessionService
    mfa: MfaService
    sessionmaker: async_sessionmaker[AsyncSession]

    async def with_password(
        self, session: AsyncSession, *, email: str, password: str, step_up: bool = True
    ) -> TokenPair | MfaChallenge:
        """Tokens, or for an account with MFA the challenge of a second step. Clients
        that cannot take a second step (``step_up=False``: the OAuth2 password grant)
        get 403 ``mfa_required`` for such an account, after the password is checked."""
        user = await UserRepository(session).get_by_email(email)
        await end_read(session)
        # Locks hold for unknown addresses too, and are checked before any hashing.
        if (locked_for := await self.lockouts.check(email)) is not None:
            await self._failed("locked", user)
            raise AccountLocked(locked_for)
        # Unknown users are verified against a dummy hash: same work, same timing.
        check = await self.passwords.verify(password, user.password_hash if user else None)
        if user is None or not check.valid:
            await self._failed("unknown_user" if user is None else "bad_password", user)
            await self.lockouts.record_failure(email, user)  # raises once this one locks
            raise InvalidCredentials()
        if not user.is_active:
            await self._failed("inactive", user)
            raise AccountInactive()
        if self.settings.require_email_verification and not user.is_verified:
            await self._failed("unverified", user)
            raise EmailNotVerified()
        if check.new_hash is not None:
            user.password_hash = check.new_hash
            session.add(user)
        if user.mfa_enabled:
            if not step_up:
                await self._failed("mfa_required", user)
                raise MfaRequired(
                    "This account signs in with a second factor: use POST /auth/login "
                    "and POST /auth/login/mfa."
                )
            return await self.mfa.challenge(session, user, amr=[AMR_PASSWORD])
        await self.lockouts.succeeded(email)
        return await self.sessions.sign_in(
            session, user, amr=[AMR_PASSWORD], rehashed=check.new_hash is not None
        )

    async def _failed(self, reason: str, user: User | None) -> None:
        await audit_service.record_now(
            self.sessionmaker,
            "auth.login.failed",
            actor_id=user.id if user else None,
            target_type="user" if user else None,
            target_id=user.id if user else None,
            success=False,
            reason=reason,
        )
