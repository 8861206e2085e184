"""Sign-up and email verification.

Registration never tells a caller whether an address has an account: both outcomes hash
the password, write one email to the outbox and one audit event, and answer the same.
The owner of a taken address is told by email instead.
"""

import math
from dataclasses import dataclass
from uuid import UUID

from aixiate_audit import service as audit_service
from aixiate_core.db import utc_now
from aixiate_core.outbox import Outbox
from aixiate_core.security import Principal
from aixiate_users import action_tokens
from aixiate_users.action_tokens import TokenPurpose
from aixiate_users.errors import EmailTaken, InvalidActionToken
from aixiate_users.models import User
from aixiate_users.passwords import Passwords
from aixiate_users.repository import UserRepository, normalize_email
from aixiate_users.settings import UsersSettings
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth.errors import RegistrationClosed
from aixiate_auth.schemas import Invitation, Registration, TokenPair
from aixiate_auth.services.sessions import SessionService
from aixiate_auth.settings import AuthSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationService:
    settings: AuthSettings
    users_settings: UsersSettings
    passwords: Passwords
    sessions: SessionService
    outbox: Outbox
    sessionmaker: async_sessionmaker[AsyncSession]

    async def register(self, session: AsyncSession, body: Registration) -> None:
        if not self.settings.may_register(body.email):
            # Decided by the mode and the address's domain alone: the same for every
            # address of a refused domain, whether or not it has an account.
            await audit_service.record_now(
                self.sessionmaker,
                "user.register.refused",
                reason="registration_closed",
                data={"mode": self.settings.registration},
            )
            raise RegistrationClosed()
        # The policy looks at the password and the address typed, never at the database,
        # so a weak_password answer says nothing about whether the address is taken.
        self.passwords.check_policy(body.password, email=body.email)
        email = normalize_email(body.email)
        password_hash = await self.passwords.hash(body.password)

        user = User(
            email=email,
            password_hash=password_hash,
            full_name=body.full_name,
            roles=[],
            is_verified=False,
        )
        if await insert_user(session, user):
            await self.send_verification(session, user)
            await audit_service.record(
                session, "user.registered", actor_id=user.id, target_type="user", target_id=user.id
            )
            return

        existing = await UserRepository(session).get_by_email(email)
        if existing is None:
            # The competing registration rolled back or the account was deleted meanwhile;
            # the caller can simply register again.
            return
        await self.outbox.enqueue(
            session,
            to=existing.email,
            template="account_exists",
            context={"name": existing.full_name},
        )
        await audit_service.record(
            session,
            "user.register.duplicate",
            target_type="user",
            target_id=existing.id,
            success=False,
            reason="email_taken",
        )

    # --- invitations --------------------------------------------------------------------

    async def invite(self, session: AsyncSession, body: Invitation, *, admin: Principal) -> User:
        """Creates the account, with no password yet, and emails its owner a single-use
        link to choose one (``{PUBLIC_URL}/accept-invite?token=T``). An address that
        has an account answers 409 ``email_taken``: admins may know that."""
        email = normalize_email(body.email)
        user = User(
            email=email,
            password_hash=None,
            full_name=body.full_name,
            roles=list(body.roles),
            is_verified=False,
        )
        if not await insert_user(session, user):
            raise EmailTaken()
        token = await action_tokens.issue(
            session,
            user_id=user.id,
            purpose=TokenPurpose.INVITE,
            ttl=self.settings.invite_ttl,
            data={"email": email},
        )
        await self.outbox.enqueue(
            session,
            to=email,
            template="invitation",
            context={
                "name": user.full_name,
                "link": self.outbox.link("accept-invite", token),
                "expires_days": self.settings.invite_ttl_seconds // 86400,
            },
        )
        await audit_service.record(
            session,
            "admin.user.invited",
            actor_id=admin.user_id,
            target_type="user",
            target_id=user.id,
            data={"roles": sorted(user.roles)},
        )
        return user

    async def accept_invite(self, session: AsyncSession, *, token: str, password: str) -> TokenPair:
        """Sets the invited account's password, marks its address verified (the link
        proves the mailbox), and signs in."""
        used = await action_tokens.consume(session, token, TokenPurpose.INVITE)
        if used is None:
            refusal = await action_tokens.refusal(session, token, TokenPurpose.INVITE)
            await self._invite_failed(session, refusal.reason, refusal.user_id)
            raise InvalidActionToken()
        user = await UserRepository(session).get(used.user_id)
        if user is None or not user.is_active or used.data.get("email") != user.email:
            reason = "unknown_user" if user is None else "inactive_or_changed"
            await self._invite_failed(session, reason, used.user_id)
            raise InvalidActionToken()
        self.passwords.check_policy(password, email=user.email)
        user.password_hash = await self.passwords.hash(password)
        user.password_changed_at = utc_now()
        user.is_verified = True
        session.add(user)
        await session.flush()
        await audit_service.record(
            session, "user.invite.accepted", actor_id=user.id, target_type="user", target_id=user.id
        )
        return await self.sessions.sign_in(session, user, amr=["pwd"], via="invitation")

    async def _invite_failed(
        self, session: AsyncSession, reason: str, user_id: UUID | None
    ) -> None:
        await audit_service.record_failure(
            session, self.sessionmaker, "user.invite.failed", user_id=user_id, reason=reason
        )

    async def send_verification(self, session: AsyncSession, user: User) -> None:
        """Issues a verification token (retiring earlier ones) and queues the email."""
        ttl = self.users_settings.email_verification_ttl
        token = await action_tokens.issue(
            session,
            user_id=user.id,
            purpose=TokenPurpose.VERIFY_EMAIL,
            ttl=ttl,
            # The address the link proves; it stops proving anything once the address changes.
            data={"email": user.email},
        )
        await self.outbox.enqueue(
            session,
            to=user.email,
            template="verify_email",
            context={
                "name": user.full_name,
                "link": self.outbox.link("verify-email", token),
                "expires_hours": math.ceil(ttl.total_seconds() / 3600),
            },
        )

    async def verify_email(self, session: AsyncSession, token: str) -> User:
        """Marks the address verified. A refused token is audited
        (``user.email.verify.failed``, committed on its own) with why, which the caller is
        never told."""
        used = await action_tokens.consume(session, token, TokenPurpose.VERIFY_EMAIL)
        if used is None:
            refusal = await action_tokens.refusal(session, token, TokenPurpose.VERIFY_EMAIL)
            await self._verify_failed(session, refusal.reason, refusal.user_id)
            raise InvalidActionToken()
        user = await UserRepository(session).get(used.user_id)
        if user is None or not user.is_active:
            reason = "unknown_user" if user is None else "inactive"
            await self._verify_failed(session, reason, used.user_id)
            raise InvalidActionToken()
        if used.data.get("email", user.email) != user.email:
            # The link proves an address the account no longer has.
            await self._verify_failed(session, "email_changed", user.id)
            raise InvalidActionToken()
        if not user.is_verified:
            user.is_verified = True
            session.add(user)
            await session.flush()
            await audit_service.record_own(session, "user.email.verified", user.id)
        return user

    async def _verify_failed(
        self, session: AsyncSession, reason: str, user_id: UUID | None
    ) -> None:
        await audit_service.record_failure(
            session, self.sessionmaker, "user.email.verify.failed", user_id=user_id, reason=reason
        )

    async def resend_verification(self, session: AsyncSession, email: str) -> None:
        """Sends a fresh link to an active, unverified account; does nothing otherwise."""
        user = await UserRepository(session).get_by_email(email)
        if user is None or user.is_verified or not user.is_active:
            return
        await self.send_verification(session, user)
        await audit_service.record(
            session, "user.verification.resent", target_type="user", target_id=user.id
        )


async def insert_user(session: AsyncSession, user: User) -> bool:
    """Adds the user unless the address is taken; False when it is.

    Insert first, look up after: the unique index decides, so concurrent registrations of
    one address create exactly one account. Writing first also matters on SQLite, where a
    transaction that read before another writer committed can no longer write at all.
    """
    try:
        async with session.begin_nested():
            session.add(user)
    except IntegrityError:
        return False
    return True
