"""Account lockout after repeated failed logins, counted in the store every replica shares.

``AIXIATE_LOCKOUT_MAX_FAILURES`` failures (5) for one address within
``AIXIATE_LOCKOUT_WINDOW_SECONDS`` (15 min) lock it for ``AIXIATE_LOCKOUT_BASE_SECONDS``
(1 min); each further lock within ``AIXIATE_LOCKOUT_RESET_SECONDS`` (12 h) doubles, up to
``AIXIATE_LOCKOUT_MAX_SECONDS`` (15 min). Keys hold a keyed digest of the normalized
address, known or not, so a lock enumerates nothing. Every lock expires, a successful
login resets the count but not the escalation, and ``AIXIATE_LOCKOUT_FAIL_MODE`` decides
what happens when the store is down. Why each of these: docs/adr/0005.

Time comes from an injectable clock (``Lockout.clock``): lock and failure state carry
their own timestamps and the store's TTLs only collect garbage, so a test moves the clock
instead of sleeping.
"""

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aixiate_core.crypto import keyed_digest
from aixiate_core.errors import ServiceUnavailable, is_connection_error
from aixiate_core.store import KeyValueStore
from aixiate_users.repository import normalize_email

from aixiate_auth.settings import AuthSettings

log = structlog.get_logger()

Clock = Callable[[], float]

#: Extra life given to keys beyond what the logic needs (clock skew between replicas).
_TTL_SLACK_SECONDS = 60
#: How long a claim to start a lock survives a process that died holding it.
_CLAIM_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Lock:
    #: Clock time at which the lock ends.
    until: float
    #: 1 for the first lock of a series, 2 for the next (twice as long), ...
    level: int
    seconds: int

    def encode(self) -> bytes:
        return json.dumps({"until": self.until, "level": self.level, "s": self.seconds}).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> "Lock | None":
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return cls(until=float(data["until"]), level=int(data["level"]), seconds=int(data["s"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class Failure:
    """What a counted failure left behind."""

    #: The lock in force after the failure, if any.
    lock: Lock | None = None
    #: This failure started the lock (it audits and emails).
    locked_now: bool = False


class Lockout:
    """Failure counting and locks in the shared key-value store.

    Failures are counted in two fixed buckets of the window's length, the previous one
    weighted by how much of it still overlaps the window: a sliding count in two atomic
    counters. The lock record keeps its level after it ends, for the escalation.
    """

    def __init__(
        self, store: KeyValueStore, settings: AuthSettings, *, secret: str, clock: Clock = time.time
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._secret = secret

    # --- keys -----------------------------------------------------------------------

    def _account(self, email: str) -> str:
        return keyed_digest(self._secret, normalize_email(email))

    @staticmethod
    def _lock_key(account: str) -> str:
        return f"auth:lockout:{account}"

    @staticmethod
    def _failures_key(account: str, bucket: int) -> str:
        return f"auth:lockout:{account}:failures:{bucket}"

    def _bucket(self, now: float) -> int:
        return int(now // self.settings.lockout_window_seconds)

    # --- queries and updates --------------------------------------------------------

    async def locked_for(self, email: str) -> int | None:
        """Seconds the account stays locked, or None when it is not locked."""
        if not self.settings.lockout_enabled:
            return None
        try:
            lock = Lock.decode(await self.store.get(self._lock_key(self._account(email))))
        except Exception as exc:
            self._store_failed(exc, "check")
            return None
        now = self.clock()
        if lock is None or lock.until <= now:
            return None
        return max(1, math.ceil(lock.until - now))

    async def failed(self, email: str) -> Failure:
        """Counts a failed login; says whether the account is locked now, and whether
        this failure is what locked it."""
        if not self.settings.lockout_enabled:
            return Failure()
        try:
            return await self._count_failure(self._account(email))
        except Exception as exc:
            self._store_failed(exc, "count")
            return Failure()

    async def _count_failure(self, account: str) -> Failure:
        settings = self.settings
        window = settings.lockout_window_seconds
        now = self.clock()
        last = Lock.decode(await self.store.get(self._lock_key(account)))
        if last is not None and last.until > now:
            # Let in before the lock of its burst began: it is part of that burst, so it
            # neither counts towards nor starts another (longer) lock.
            return Failure(lock=last)
        bucket = self._bucket(now)
        current_key = self._failures_key(account, bucket)
        previous_key = self._failures_key(account, bucket - 1)
        current = await self.store.incr(current_key, ttl=2 * window + _TTL_SLACK_SECONDS)
        previous = int(await self.store.get(previous_key) or 0)
        overlap = 1 - (now - bucket * window) / window
        if current + previous * overlap < settings.lockout_max_failures:
            return Failure()
        # Of the requests that reach the threshold together, the one holding the claim
        # locks (and audits and emails); checking for a lock while holding it means two
        # can never both start one. The claim expires by itself should we die holding it.
        lock_key = self._lock_key(account)
        claim_key = f"{lock_key}:claim"
        if not await self.store.set_if_absent(claim_key, b"1", ttl=_CLAIM_SECONDS):
            lock = Lock.decode(await self.store.get(lock_key))
            return Failure(lock=lock if lock is not None and lock.until > now else None)
        try:
            last = Lock.decode(await self.store.get(lock_key))
            if last is not None and last.until > now:
                return Failure(lock=last)
            escalates = last is not None and now - last.until < settings.lockout_reset_seconds
            level = last.level + 1 if last is not None and escalates else 1
            seconds = min(
                settings.lockout_base_seconds * 2 ** min(level - 1, 32),
                settings.lockout_max_seconds,
            )
            lock = Lock(until=now + seconds, level=level, seconds=seconds)
            # Kept after the lock ends, through the reset period, to remember the level.
            ttl = seconds + settings.lockout_reset_seconds + _TTL_SLACK_SECONDS
            await self.store.set(lock_key, lock.encode(), ttl=ttl)
            await self.store.delete(current_key, previous_key)
        finally:
            await self.store.delete(claim_key)
        return Failure(lock=lock, locked_now=True)

    async def succeeded(self, email: str) -> None:
        """A successful login forgets the failures (the escalation level stays)."""
        if not self.settings.lockout_enabled:
            return
        account = self._account(email)
        bucket = self._bucket(self.clock())
        try:
            await self.store.delete(
                self._failures_key(account, bucket), self._failures_key(account, bucket - 1)
            )
        except Exception as exc:
            self._store_failed(exc, "reset")

    async def unlock(self, email: str) -> bool:
        """Clears the lock, its escalation and the failures; True when it was locked.
        Raises 503 when the store does not answer, whatever the fail mode: an unlock
        that did not happen must not be reported as done."""
        account = self._account(email)
        bucket = self._bucket(self.clock())
        lock_key = self._lock_key(account)
        try:
            lock = Lock.decode(await self.store.get(lock_key))
            await self.store.delete(
                lock_key,
                self._failures_key(account, bucket),
                self._failures_key(account, bucket - 1),
            )
        except Exception as exc:
            if is_connection_error(exc):
                raise ServiceUnavailable() from None
            raise
        return lock is not None and lock.until > self.clock()

    def _store_failed(self, exc: Exception, action: str) -> None:
        """Applies the fail mode to a store error; anything but an outage propagates."""
        if not is_connection_error(exc):
            raise exc
        mode = self.settings.lockout_fail_mode
        log.warning(
            "auth.lockout.store_unavailable",
            action=action,
            fail_mode=mode,
            error_type=type(exc).__name__,
        )
        if mode == "fail_closed":
            raise ServiceUnavailable(
                "Sign-in protection is not available; try again shortly."
            ) from None
