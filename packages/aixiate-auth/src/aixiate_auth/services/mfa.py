"""Two-step verification: enrolling an authenticator, recovery codes, and the second
step of a login.

The TOTP secret is sealed at rest; recovery codes are kept as digests only and handed
out once. A login that passed the password step gets an ``mfa_token``
(:class:`~aixiate_auth.mfa.MfaChallenges`) instead of tokens; finishing it takes a
current TOTP code (each accepted once) or an unused recovery code. Wrong codes count
toward the account's lockout, so a stolen password plus a flood of guesses locks the
account exactly as a flood of wrong passwords does; a correct password alone never
clears the failures a second step has piled up.
"""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aixiate_audit import service as audit_service
from aixiate_core.crypto import DecryptionError, SecretBox, keyed_digest
from aixiate_core.db import end_read, utc_now
from aixiate_core.errors import InvalidToken
from aixiate_core.outbox import Outbox
from aixiate_core.security import Principal
from aixiate_users.errors import InvalidPassword
from aixiate_users.models import User
from aixiate_users.passwords import Passwords
from aixiate_users.repository import UserRepository
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth import mfa
from aixiate_auth.errors import (
    AccountLocked,
    InvalidMfaCode,
    InvalidMfaToken,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    WrongMfaCode,
)
from aixiate_auth.mfa import Challenge, MfaChallenges
from aixiate_auth.repository import MfaRepository
from aixiate_auth.schemas import MfaChallenge, MfaStatus, TokenPair, TotpSetup
from aixiate_auth.services.lockout import LockoutService
from aixiate_auth.services.sessions import SessionService

log = structlog.get_logger()

#: The purpose label of the secret box that seals TOTP secrets.
TOTP_BOX_PURPOSE = "aixiate/mfa-totp"
_METHODS = [mfa.TOTP_METHOD, mfa.RECOVERY_METHOD]


@dataclass(frozen=True, slots=True, kw_only=True)
class MfaService:
    issuer: str
    secret_key: str
    box: SecretBox
    passwords: Passwords
    challenges: MfaChallenges
    lockouts: LockoutService
    sessions: SessionService
    outbox: Outbox
    sessionmaker: async_sessionmaker[AsyncSession]

    # --- the owner's settings ---------------------------------------------------------

    async def status(self, session: AsyncSession, principal: Principal) -> MfaStatus:
        user = await self._user(session, principal)
        if not user.mfa_enabled:
            return MfaStatus(enabled=False, methods=[], recovery_codes_remaining=0)
        remaining = await MfaRepository(session).count_unused_codes(user.id)
        methods = [mfa.TOTP_METHOD] + ([mfa.RECOVERY_METHOD] if remaining else [])
        return MfaStatus(enabled=True, methods=methods, recovery_codes_remaining=remaining)

    async def setup(self, session: AsyncSession, principal: Principal) -> TotpSetup:
        """A fresh pending secret (replacing an unconfirmed one) for the user to enter
        into an authenticator app; MFA stays off until :meth:`confirm`."""
        user = await self._user(session, principal)
        if user.mfa_enabled:
            raise MfaAlreadyEnabled()
        secret = mfa.new_secret()
        await MfaRepository(session).set_pending(user.id, self.box.seal(secret.encode()))
        await audit_service.record_own(session, "auth.mfa.setup_started", user.id)
        uri = mfa.otpauth_uri(secret, account=user.email, issuer=self.issuer)
        return TotpSetup(secret=secret, otpauth_uri=uri, qr_svg=mfa.qr_svg(uri))

    async def confirm(self, session: AsyncSession, principal: Principal, code: str) -> list[str]:
        """Turns MFA on with a first code from the app; returns the recovery codes."""
        user = await self._user(session, principal)
        if user.mfa_enabled:
            raise MfaAlreadyEnabled()
        repository = MfaRepository(session)
        credential = await repository.totp(user.id)
        if credential is None:
            raise InvalidMfaCode(
                "Start with POST /auth/mfa/totp/setup: there is no secret to confirm."
            )
        step = self._step(credential.secret, code)
        if step is None or not await repository.accept_step(user.id, step, utc_now()):
            await audit_service.record_failure(
                session,
                self.sessionmaker,
                "auth.mfa.failed",
                user_id=user.id,
                reason="bad_code",
                data={"action": "confirm"},
            )
            raise InvalidMfaCode()
        credential.confirmed_at = utc_now()
        session.add(credential)
        user.mfa_enabled = True
        session.add(user)
        codes = await self._new_codes(session, user)
        await self._tell(session, user, "mfa_enabled")
        await audit_service.record_own(session, "auth.mfa.enabled", user.id)
        return codes

    async def disable(self, session: AsyncSession, principal: Principal, password: str) -> None:
        """Turns MFA off (the password is required) and voids the recovery codes."""
        user = await self._user(session, principal)
        if not user.mfa_enabled:
            raise MfaNotEnabled()
        await self._confirm_password(session, user, password, action="disable")
        await self._turn_off(session, user)
        await self._tell(session, user, "mfa_disabled")
        await audit_service.record_own(session, "auth.mfa.disabled", user.id)

    async def regenerate(
        self, session: AsyncSession, principal: Principal, password: str
    ) -> list[str]:
        """A new set of recovery codes; every earlier code stops working."""
        user = await self._user(session, principal)
        if not user.mfa_enabled:
            raise MfaNotEnabled()
        await self._confirm_password(session, user, password, action="recovery_codes")
        codes = await self._new_codes(session, user)
        await self._tell(session, user, "mfa_recovery_codes_regenerated")
        await audit_service.record_own(session, "auth.mfa.recovery_codes_regenerated", user.id)
        return codes

    async def reset(self, session: AsyncSession, user: User, *, admin: Principal) -> None:
        """An admin turns a user's MFA off (a lost phone and no codes): 204 also when it
        was off, but only a real change emails the owner."""
        was_enabled = user.mfa_enabled
        await self._turn_off(session, user)
        if was_enabled:
            await self._tell(session, user, "mfa_reset")
        await audit_service.record(
            session,
            "admin.user.mfa.reset",
            actor_id=admin.user_id,
            target_type="user",
            target_id=user.id,
            data={"was_enabled": was_enabled},
        )

    # --- the second step of a login ---------------------------------------------------

    def binding(self, user: User) -> str:
        """What a step-up token is bound to: the password check that issued it. A new
        password (a reset meanwhile) makes every pending token useless."""
        return keyed_digest(self.secret_key, f"mfa-binding\x00{user.id}\x00{user.password_hash}")

    async def challenge(self, session: AsyncSession, user: User, *, amr: list[str]) -> MfaChallenge:
        token = await self.challenges.issue(user.id, binding=self.binding(user), amr=amr)
        await audit_service.record_own(session, "auth.mfa.challenged", user.id)
        return MfaChallenge(mfa_token=token, mfa_methods=list(_METHODS))

    async def login(
        self,
        session: AsyncSession,
        *,
        mfa_token: str,
        code: str,
        throttle_account: Callable[[str], Awaitable[None]] | None = None,
    ) -> TokenPair:
        """Finishes a login with a TOTP code or a recovery code. ``throttle_account`` is
        the per-account rate limit, applied once the token names the account."""
        challenge = await self.challenges.get(mfa_token)
        if challenge is None:
            await self._failed(session, None, "unknown_token")
            raise InvalidMfaToken()
        if throttle_account is not None:
            await throttle_account(str(challenge.user_id))
        user = await UserRepository(session).get(challenge.user_id)
        await end_read(session)
        if (
            user is None
            or not user.is_active
            or not user.mfa_enabled
            or challenge.binding != self.binding(user)
        ):
            await self.challenges.discard(challenge)
            await self._failed(session, user, "stale_token")
            raise InvalidMfaToken()
        if (locked_for := await self.lockouts.check(user.email)) is not None:
            await self._failed(session, user, "locked")
            raise AccountLocked(locked_for)
        if not await self.challenges.attempt(challenge):
            await self._failed(session, user, "too_many_attempts")
            raise InvalidMfaToken()
        method = await self._accept(session, user, code)
        if method is None:
            # The failure's audit rolls the request back, which would expire the user
            # that the lockout still needs: keep it as it was read.
            session.expunge(user)
            await self._failed(session, user, "bad_code")
            if await self.challenges.attempts_left(challenge) == 0:
                await self.challenges.discard(challenge)
            await self.lockouts.record_failure(user.email, user)  # raises once this one locks
            raise WrongMfaCode()
        if not await self.challenges.consume(challenge):
            # A concurrent request with the same token finished first.
            await self._failed(session, user, "used_token")
            raise InvalidMfaToken()
        return await self._signed_in(session, user, challenge, method)

    async def _accept(self, session: AsyncSession, user: User, code: str) -> str | None:
        """The method ``code`` passed as, having used it up; None when it is wrong."""
        repository = MfaRepository(session)
        if mfa.looks_like_totp(code):
            credential = await repository.totp(user.id)
            if credential is None or credential.confirmed_at is None:
                return None
            step = self._step(credential.secret, code)
            if step is not None and await repository.accept_step(user.id, step, utc_now()):
                return mfa.TOTP_METHOD
            return None
        unused = await repository.unused_codes(user.id)
        index = mfa.find_digest([c.code_hash for c in unused], mfa.recovery_code_digest(code))
        if index is not None and await repository.use_code(unused[index].id, utc_now()):
            return mfa.RECOVERY_METHOD
        return None

    async def _signed_in(
        self, session: AsyncSession, user: User, challenge: Challenge, method: str
    ) -> TokenPair:
        amr = list(challenge.amr)
        if method == mfa.TOTP_METHOD:
            amr.append(mfa.AMR_OTP)
        amr.append(mfa.AMR_MFA)
        await self.lockouts.succeeded(user.email)
        pair = await self.sessions.sign_in(session, user, amr=amr)
        await audit_service.record_own(
            session, "auth.mfa.succeeded", user.id, data={"method": method}
        )
        if method == mfa.RECOVERY_METHOD:
            remaining = await MfaRepository(session).count_unused_codes(user.id)
            await audit_service.record_own(
                session, "auth.mfa.recovery_code_used", user.id, data={"remaining": remaining}
            )
            await self._tell(session, user, "mfa_recovery_code_used", remaining=remaining)
        return pair

    # --- helpers ----------------------------------------------------------------------

    async def _user(self, session: AsyncSession, principal: Principal) -> User:
        user = await UserRepository(session).get(principal.user_id)
        if user is None:
            # The session was live a moment ago: the account was deleted meanwhile.
            raise InvalidToken("The session of this token has ended.")
        return user

    def _open(self, sealed: bytes) -> str | None:
        """The secret, or None when it was sealed under another secret key (the key was
        rotated): no code can match it then, and recovery codes still work."""
        try:
            return self.box.open(sealed).decode()
        except DecryptionError:
            log.error("auth.mfa.secret_unreadable")
            return None

    def _step(self, sealed: bytes, code: str) -> int | None:
        secret = self._open(sealed)
        return None if secret is None else mfa.matching_step(secret, code, time.time())

    async def _new_codes(self, session: AsyncSession, user: User) -> list[str]:
        codes = mfa.new_recovery_codes()
        digests = [mfa.recovery_code_digest(code) for code in codes]
        await MfaRepository(session).replace_codes(user.id, digests)
        return codes

    async def _turn_off(self, session: AsyncSession, user: User) -> None:
        await MfaRepository(session).remove_all(user.id)
        user.mfa_enabled = False
        session.add(user)
        await session.flush()

    async def _confirm_password(
        self, session: AsyncSession, user: User, password: str, *, action: str
    ) -> None:
        """A wrong password answers 403 ``invalid_password``, is audited, and counts
        toward the lockout: a stolen access token must not be a free password oracle."""
        if (locked_for := await self.lockouts.check(user.email)) is not None:
            raise AccountLocked(locked_for)
        await end_read(session)
        check = await self.passwords.verify(password, user.password_hash)
        if check.valid:
            return
        session.expunge(user)  # as in login: the rollback below must not expire it
        await audit_service.record_failure(
            session,
            self.sessionmaker,
            "auth.mfa.failed",
            user_id=user.id,
            reason="bad_password",
            data={"action": action},
        )
        await self.lockouts.record_failure(user.email, user)
        raise InvalidPassword()

    async def _failed(self, session: AsyncSession, user: User | None, reason: str) -> None:
        await audit_service.record_failure(
            session,
            self.sessionmaker,
            "auth.mfa.failed",
            user_id=user.id if user else None,
            reason=reason,
            data={"action": "login"},
        )

    async def _tell(
        self, session: AsyncSession, user: User, template: str, **context: object
    ) -> None:
        await self.outbox.enqueue(
            session, to=user.email, template=template, context={"name": user.full_name, **context}
        )
