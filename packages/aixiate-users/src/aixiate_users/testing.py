"""Factories for tests of this package and of the packages above it (auth, the service).

They live in the package rather than in ``tests/factories.py``: test modules run under
``--import-mode=importlib`` without ``tests/__init__.py``, so they cannot import their
neighbours, while any test can import ``aixiate_users.testing`` (as ``aixiate_core.testing``).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_users.models import User
from aixiate_users.passwords import Passwords
from aixiate_users.repository import normalize_email
from aixiate_users.settings import UsersSettings

#: A password the default policy accepts: the one the test users of every package have.
PASSWORD = "vivid-otter-harbour-42"  # noqa: S105 - a test password
#: What a caller who does not know :data:`PASSWORD` tries instead.
WRONG_PASSWORD = "not-the-password-at-all"  # noqa: S105 - a test password


async def create_user(session: AsyncSession, **overrides: Any) -> User:
    """A verified, active user with a unique address; keyword arguments set any column.

    ``password_hash`` is None unless given: hash with the test's PasswordService when the
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
    """:func:`create_user` whose ``password`` works, hashed by ``passwords``."""
    return await create_user(session, password_hash=await passwords.hash(password), **overrides)


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
