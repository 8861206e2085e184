"""Factories for tests of this package and of the packages above it (auth, the service).

They live in the package rather than in ``tests/factories.py``: test modules run under
``--import-mode=importlib`` without ``tests/__init__.py``, so they cannot import their
neighbours, while any test can import ``aixiate_users.testing`` (as ``aixiate_core.testing``).
"""

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

import httpx
from aixiate_audit.models import AuditEvent
from aixiate_core.db import create_sessionmaker
from aixiate_core.testing.db import Sessions
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_users.models import User
from aixiate_users.passwords import Passwords
from aixiate_users.repository import normalize_email
from aixiate_users.settings import UsersSettings

#: A password the default policy accepts: the one the test users of every package have.
PASSWORD = "vivid-otter-harbour-42"  # noqa: S105 - a test password
#: A fixture that makes users: ``make_user(**columns)`` in auth, ``account(**columns)`` here.
type UserFactory = Callable[..., Awaitable[User]]
#: The fields of a user as the API shows it (``UserRead``): what API.md promises, no more.
USER_FIELDS = frozenset(
    {
        "id",
        "email",
        "full_name",
        "roles",
        "is_active",
        "is_verified",
        "mfa_enabled",
        "created_at",
        "updated_at",
    }
)
#: What a caller who does not know :data:`PASSWORD` tries instead.
WRONG_PASSWORD = "not-the-password-at-all"  # noqa: S105 - a test password


async def create_user(session: AsyncSession, **overrides: Any) -> User:
    """A verified, active user with a unique address; keyword arguments set any column.

    ``password_hash`` is None unless given: hash with the test's Passwords when the
    test needs a password that works.
    """
    values: dict[str, Any] = {
        "email": f"user-{uuid4().hex[:12]}@example.com",
        "full_name": "Test User",
        "is_verified": True,
        **overrides,
    }
    values["email"] = normalize_email(values["email"])
    user = User(**values)
    session.add(user)
    await session.flush()
    return user


async def create_user_with_password(
    session: AsyncSession, passwords: Passwords, password: str = PASSWORD, **overrides: Any
) -> User:
    """:func:`create_user` whose ``password`` works, hashed by ``passwords`` (a
    ``password_hash`` among ``overrides`` wins)."""
    if "password_hash" not in overrides:
        overrides["password_hash"] = await passwords.hash(password)
    return await create_user(session, **overrides)


def fast_users_settings(**overrides: Any) -> UsersSettings:
    """Settings without the environment's, with cheap argon2 parameters (a test hashes
    hundreds of passwords), plus the given overrides."""
    values: dict[str, Any] = {
        "email_verification_ttl_seconds": 86400,
        "argon2_memory_kib": 1024,
        "argon2_time_cost": 1,
        "password_hash_workers": 4,
    }
    return UsersSettings(_env_file=None, **(values | overrides))


@contextmanager
def fast_passwords(settings: UsersSettings | None = None) -> Iterator[Passwords]:
    """A :class:`Passwords` on ``settings`` (:func:`fast_users_settings` when None) whose
    hashing workers are shut down when the block ends."""
    service = Passwords(settings or fast_users_settings())
    try:
        yield service
    finally:
        service.shutdown()


async def audit_events(
    db: AsyncSession | AsyncEngine | Sessions,
    event_type: str | None = None,
    *,
    about: object = None,
    response: httpx.Response | None = None,
) -> list[AuditEvent]:
    """The audit events of ``event_type``, about ``about`` (a target id) and written during
    ``response``'s request where given, oldest first. ``db`` is the test's session, or the
    engine or sessionmaker of an app's database (what the app committed)."""
    statement = select(AuditEvent).order_by(col(AuditEvent.occurred_at))
    if event_type is not None:
        statement = statement.where(col(AuditEvent.event_type) == event_type)
    if about is not None:
        statement = statement.where(col(AuditEvent.target_id) == str(about))
    if response is not None:
        statement = statement.where(col(AuditEvent.request_id) == response.headers["x-request-id"])
    if isinstance(db, AsyncSession):
        return list((await db.exec(statement)).all())
    sessions = create_sessionmaker(db) if isinstance(db, AsyncEngine) else db
    async with sessions() as session:
        return list((await session.exec(statement)).all())
