"""Password hashing: argon2id, verified off the event loop; bcrypt accepted as legacy.

Credentials belong to the users package: the password hash is a column of ``User``, and
both users (admin create, email change, account deletion) and auth (registration, login,
recovery) hash and check passwords through one :class:`Passwords`. Every hash and verify
runs in a bounded thread pool: argon2 is tens of milliseconds of CPU and memory by
design, and on the event loop a burst of logins would stall every other request.
"""

import asyncio
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import structlog
from aixiate_core.crypto import new_token
from passlib.context import CryptContext  # type: ignore[import-untyped]

from aixiate_users.policy import PasswordPolicy, common_passwords, normalize_password
from aixiate_users.settings import UsersSettings

log = structlog.get_logger()

#: bcrypt reads only the first 72 bytes; bcrypt >= 5 refuses longer input instead of
#: truncating, so legacy hashes are verified against the prefix every older library used.
BCRYPT_MAX_BYTES = 72


def _secret(password: str) -> bytes:
    # surrogatepass: a lone surrogate (JSON allows "\ud800") must fail to match, not crash.
    return normalize_password(password).encode("utf-8", "surrogatepass")


def lower_thread_priority(nice: int) -> None:
    """Thread initializer of the hash workers: ``nice`` levels below the process.

    On Linux each thread has its own nice value, so this lowers the worker alone. The
    scheduler then gives a core to the event loop (and the database next to it) first
    when both want it, which bounds what a burst of logins costs every other request.
    Elsewhere the call would reprioritize the whole process, so it does nothing there.
    """
    if nice <= 0 or sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, current + nice))
    except OSError as exc:
        log.warning("password.worker_priority_unchanged", error_type=type(exc).__name__)


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    valid: bool
    #: A fresh hash when the stored one uses a deprecated scheme or outdated parameters.
    new_hash: str | None = None


class Passwords:
    """Hash, verify and policy. Call :meth:`shutdown` when the app stops."""

    def __init__(self, settings: UsersSettings) -> None:
        self.settings = settings
        self.policy = PasswordPolicy(
            min_length=self.settings.password_min_length,
            max_length=self.settings.password_max_length,
        )
        # bcrypt stays verifiable for imported accounts; deprecated, so every successful
        # bcrypt check yields an argon2id re-hash. Argon2 hashes whose parameters differ
        # from the configured ones need an update too (in either direction).
        self._context = CryptContext(
            schemes=["argon2", "bcrypt"],
            default="argon2",
            deprecated=["bcrypt"],
            argon2__type="ID",
            argon2__rounds=self.settings.argon2_time_cost,
            argon2__memory_cost=self.settings.argon2_memory_kib,
            argon2__parallelism=self.settings.argon2_parallelism,
        )
        # Verifying an unknown user's password against this costs what a wrong password
        # costs, so response times do not tell which emails have accounts.
        self._dummy_hash = self._context.hash(new_token())
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    async def hash(self, password: str) -> str:
        return await self._run(self._hash_sync, password)

    async def verify(self, password: str, password_hash: str | None) -> PasswordCheck:
        """Costs the same whether or not ``password_hash`` is None (an unknown user)."""
        return await self._run(self._verify_sync, password, password_hash)

    def check_policy(self, password: str, *, email: str | None = None) -> None:
        """Raises :class:`~aixiate_users.errors.WeakPassword` naming the reason."""
        self.policy.check(password, email=email)

    async def preload(self) -> None:
        """Reads the common-password list in a worker thread (about 0.1 s), so the first
        registration does not pay for it on the event loop. Call it at startup."""
        await self._run(common_passwords)

    def shutdown(self, *, wait: bool = True) -> None:
        """Stops the worker threads. A later hash or verify starts a fresh pool, so an
        app whose lifespan runs twice (tests) keeps working."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=not wait)

    async def _run[T](self, function: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), partial(function, *args))

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.settings.password_hash_workers,
                    thread_name_prefix="aixiate-password",
                    initializer=lower_thread_priority,
                    initargs=(self.settings.password_hash_nice,),
                )
            return self._executor

    def _hash_sync(self, password: str) -> str:
        hashed: str = self._context.hash(_secret(password))
        return hashed

    def _verify_sync(self, password: str, password_hash: str | None) -> PasswordCheck:
        secret = _secret(password)
        if password_hash is None:
            self._matches(secret, self._dummy_hash)
            return PasswordCheck(valid=False)
        try:
            if self._context.identify(password_hash) == "bcrypt":
                return self._verify_bcrypt(password, secret, password_hash)
            valid, new_hash = self._context.verify_and_update(secret, password_hash)
        except ValueError as exc:
            # An unrecognised or corrupt stored hash, or input a scheme refuses (NUL in
            # bcrypt, over 4 KiB): a failed check, never a 500.
            log.warning("password.verify_refused", error_type=type(exc).__name__)
            return PasswordCheck(valid=False)
        return PasswordCheck(valid=valid, new_hash=new_hash if valid else None)

    def _verify_bcrypt(self, password: str, secret: bytes, password_hash: str) -> PasswordCheck:
        valid = self._context.verify(secret[:BCRYPT_MAX_BYTES], password_hash)
        raw = password.encode("utf-8", "surrogatepass")
        if not valid and raw != secret:
            # Imported hashes were made from the password as typed, before we normalized.
            valid = self._context.verify(raw[:BCRYPT_MAX_BYTES], password_hash)
        if not valid:
            return PasswordCheck(valid=False)
        return PasswordCheck(valid=True, new_hash=self._context.hash(secret))

    def _matches(self, secret: bytes, password_hash: str) -> bool:
        try:
            matches: bool = self._context.verify(secret, password_hash)
        except ValueError:
            return False
        return matches
