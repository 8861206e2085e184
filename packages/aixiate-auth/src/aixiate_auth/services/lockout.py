"""What a lock means for an account: the audit, the owner's email, the admin's unlock.

The counting itself is :class:`~aixiate_auth.lockout.Lockout`'s, in the shared store.
"""

import math
from dataclasses import dataclass

import structlog
from aixiate_audit import service as audit_service
from aixiate_core.db import own_transaction
from aixiate_core.outbox import Outbox
from aixiate_core.security import Principal
from aixiate_users.models import User
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth.errors import AccountLocked
from aixiate_auth.lockout import Lockout

log = structlog.get_logger()


@dataclass(frozen=True, slots=True, kw_only=True)
class LockoutService:
    lockout: Lockout
    outbox: Outbox
    sessionmaker: async_sessionmaker[AsyncSession]

    async def check(self, email: str) -> int | None:
        """Seconds the account stays locked, or None."""
        return await self.lockout.locked_for(email)

    async def record_failure(self, email: str, user: User | None) -> None:
        """Counts a failed login for ``email``. When that locks the account, audits
        ``auth.account.locked`` and (first lock of a series) emails the owner, in one
        transaction of their own, and raises :class:`AccountLocked`."""
        failure = await self.lockout.failed(email)
        lock = failure.lock
        if lock is None:
            return
        if not failure.locked_now:
            raise AccountLocked(max(1, math.ceil(lock.until - self.lockout.clock())))
        log.warning("auth.account.locked", level=lock.level, seconds=lock.seconds, known=bool(user))
        if user is not None:
            async with own_transaction(self.sessionmaker) as own:
                await audit_service.record(
                    own,
                    "auth.account.locked",
                    target_type="user",
                    target_id=user.id,
                    success=False,
                    reason="too_many_failures",
                    data={"level": lock.level, "seconds": lock.seconds},
                )
                if lock.level == 1 and user.is_active:
                    await self.outbox.enqueue(
                        own,
                        to=user.email,
                        template="account_locked",
                        context={"name": user.full_name, "minutes": math.ceil(lock.seconds / 60)},
                    )
        raise AccountLocked(lock.seconds)

    async def succeeded(self, email: str) -> None:
        await self.lockout.succeeded(email)

    async def unlock(self, session: AsyncSession, user: User, *, admin: Principal) -> None:
        """An admin's unlock: clears the lock, its escalation and the failures, audited in
        the admin's transaction. The answer is the same whether or not it was locked."""
        was_locked = await self.lockout.unlock(user.email)
        await audit_service.record(
            session,
            "auth.account.unlocked",
            target_type="user",
            target_id=user.id,
            reason="admin",
            data={"was_locked": was_locked},
        )
        await audit_service.record(
            session,
            "admin.user.unlocked",
            actor_id=admin.user_id,
            target_type="user",
            target_id=user.id,
        )
