"""Rate limits per client IP and per target account, shared by every replica.

Counting is the ``limits`` library's: a sliding window counter (or a moving window, see
``AIXIATE_RATE_LIMIT_STRATEGY``) in Redis when ``AIXIATE_REDIS_URL`` is set, so every
replica spends one budget, and in process memory on the embedded default. The limiter
is built in the lifespan (:func:`aixiate_core.resources.open_resources`) and closed with
it; each limit is a setting (``AIXIATE_RATE_LIMIT_<NAME>_PER_<SCOPE>``).

Routes use it through dependencies:

- ``rate_limit("login")`` counts the request against the per-IP limit of ``login``
  and hands the route a :class:`Throttle`, whose ``account(email)`` counts it against
  the per-account limit once the body is parsed. Two routes that name the same limit
  share one budget (``/login`` and ``/token``). Limiting a new endpoint is one line:
  ``throttle: Annotated[Throttle, Depends(rate_limit("mfa"))]``.
- :func:`global_rate_limit`, on every API router, is the ceiling per IP for the whole
  API (health and metrics are not behind it).

An exceeded limit answers 429 ``rate_limited`` with ``Retry-After`` and the
``RateLimit-Limit``/``-Remaining``/``-Reset`` headers (successful answers of limited
routes carry them too). Keys hold a keyed digest of the IP or address, never the value.
Each exceeded limit publishes :class:`RateLimitExceeded` (audited as
``security.rate_limited``) at most once per limit, key and window, so a flood of
requests cannot become a flood of audit rows.

When the store does not answer, ``AIXIATE_RATE_LIMIT_FAIL_MODE`` decides (and
``AIXIATE_RATE_LIMIT_GLOBAL_FAIL_MODE`` for the ceiling): ``fail_closed`` answers 503
``service_unavailable``, ``fail_open`` lets the request through unchecked. Redis clients
reconnect by themselves, so limiting resumes when Redis is back.
"""

import ipaddress
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

import structlog
from fastapi import Depends, Request, Response
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.aio.strategies import RateLimiter as Strategy
from limits.errors import StorageError
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import RedisError

from aixiate_core.context import current_request
from aixiate_core.crypto import keyed_digest
from aixiate_core.errors import RateLimited, ServiceUnavailable
from aixiate_core.events import DomainEvents
from aixiate_core.settings import FailMode, Settings
from aixiate_core.store import REDIS_MAX_CONNECTIONS, KeyValueStore

log = structlog.get_logger()

Scope = Literal["ip", "account"]
#: The name of the ceiling per IP for the whole API (``AIXIATE_RATE_LIMIT_GLOBAL``).
GLOBAL = "global"
#: Seconds a client is told to wait when limiting itself is unavailable.
UNAVAILABLE_RETRY_AFTER = 5
#: Errors that mean the store did not answer (``limits`` wraps the driver's).
_STORE_ERRORS = (StorageError, RedisError, OSError)


@dataclass(frozen=True, slots=True)
class RateLimitExceeded:
    """A domain event: a client ran out of a limit (published sampled, see module doc)."""

    name: str
    scope: str
    #: The policy that was exceeded, e.g. ``10 per 1 minute``.
    policy: str
    #: A prefix of the keyed digest of the IP or account: correlates, reveals nothing.
    key: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Where a client stands against one limit; rendered as the RateLimit-* headers."""

    limit: int
    remaining: int
    #: Seconds until the budget grows again.
    reset_after: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    #: The tightest limit checked (the exceeded one when not allowed); None when no
    #: limit applied, limiting is off, or the store failed open.
    usage: Usage | None = None
    exceeded: RateLimitItem | None = None
    key: str = ""


ALLOWED = Decision(allowed=True)


def client_address(request: Request) -> str:
    """The client's IP as the middleware resolved it (``X-Forwarded-For`` only from
    trusted proxies). IPv6 clients are counted per /64: one host usually holds all of it."""
    info = current_request()
    ip = info.ip if info is not None else (request.client.host if request.client else None)
    if not ip:
        return "unknown"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def create_storage(settings: Settings) -> tuple[Storage, BlockingConnectionPool | None]:
    """The ``limits`` storage, and the Redis pool to close with it (None in memory)."""
    if not settings.redis_url:
        return MemoryStorage(), None
    # Our own pool, as bounded and timed as the key-value store's, so an unreachable
    # Redis costs at most the timeout and a burst waits for a connection.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
    )
    options: dict[str, Any] = {"connection_pool": pool}
    storage = RedisStorage(
        "async+" + settings.redis_url.replace("unix://", "redis+unix://", 1),
        implementation="redispy",
        key_prefix=settings.redis_key_prefix + "ratelimit",
        wrap_exceptions=True,
        **options,
    )
    return storage, pool


def _limits_from(settings: Settings) -> dict[tuple[str, str], tuple[RateLimitItem, ...]]:
    table: dict[tuple[str, str], tuple[RateLimitItem, ...]] = {}
    for field, value in settings.rate_limits().items():
        rest = field.removeprefix("rate_limit_")
        name, _, scope = rest.rpartition("_per_")
        key = (GLOBAL, "ip") if rest == GLOBAL else (name, scope)
        table[key] = tuple(parse_many(value))
    return table


class RateLimiter:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        store: KeyValueStore,
        *,
        pool: BlockingConnectionPool | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        #: Where sampling markers live (the app's key-value store).
        self.store = store
        self._pool = pool
        self._secret = settings.secret()
        self._limits = _limits_from(settings)
        self.strategy: Strategy = (
            MovingWindowRateLimiter(storage)
            if settings.rate_limit_strategy == "moving-window"
            else SlidingWindowCounterRateLimiter(storage)
        )

    @classmethod
    def from_settings(cls, settings: Settings, store: KeyValueStore) -> "RateLimiter":
        storage, pool = create_storage(settings)
        return cls(settings, storage, store, pool=pool)

    @property
    def enabled(self) -> bool:
        return self.settings.rate_limit_enabled

    def limits(self, name: str, scope: str) -> tuple[RateLimitItem, ...]:
        return self._limits.get((name, scope), ())

    def fail_mode(self, name: str) -> FailMode:
        if name == GLOBAL:
            return self.settings.rate_limit_global_fail_mode
        return self.settings.rate_limit_fail_mode

    def digest(self, identity: str) -> str:
        return keyed_digest(self._secret, identity)

    async def hit(self, name: str, scope: str, identity: str, *, usage: bool = True) -> Decision:
        """Counts one request of ``identity`` against every limit of ``name``/``scope``.

        Stops at the first exceeded limit (later ones are not charged). With ``usage``
        the decision also reports the tightest remaining budget, for the headers.
        Raises :class:`ServiceUnavailable` when the store fails and the mode is closed.
        """
        items = self.limits(name, scope)
        if not self.enabled or not items:
            return ALLOWED
        key = self.digest(identity)
        try:
            for item in items:
                if not await self.strategy.hit(item, name, scope, key):
                    return Decision(False, await self._usage(item, name, scope, key), item, key)
            if not usage:
                return Decision(True, key=key)
            usages = [await self._usage(item, name, scope, key) for item in items]
        except _STORE_ERRORS as exc:
            mode = self.fail_mode(name)
            log.warning(
                "ratelimit.store_unavailable",
                limit=name,
                scope=scope,
                fail_mode=mode,
                error_type=type(exc).__name__,
            )
            if mode == "fail_closed":
                raise ServiceUnavailable(
                    "Rate limiting is not available; try again shortly.",
                    retry_after=UNAVAILABLE_RETRY_AFTER,
                ) from None
            return ALLOWED
        return Decision(True, min(usages, key=lambda u: (u.remaining, -u.reset_after)), key=key)

    async def _usage(self, item: RateLimitItem, name: str, scope: str, key: str) -> Usage:
        stats = await self.strategy.get_window_stats(item, name, scope, key)
        reset_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Usage(limit=item.amount, remaining=max(0, stats.remaining), reset_after=reset_after)

    async def clear(self, name: str, scope: str, identity: str) -> None:
        """Forgets what ``identity`` spent (operators and tests)."""
        key = self.digest(identity)
        for item in self.limits(name, scope):
            await self.strategy.clear(item, name, scope, key)

    async def close(self) -> None:
        if isinstance(self.storage, MemoryStorage):
            # Its expiry task belongs to the event loop that is about to go.
            if self.storage.timer is not None:
                self.storage.timer.cancel()
            await self.storage.reset()
        if self._pool is not None:
            await self._pool.aclose()


def get_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.state.limiter
    return limiter


LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]


class Throttle:
    """One request's dealings with one named limit. The per-IP check has passed when a
    route receives it; :meth:`account` adds the per-account check once the route knows
    the account (from the parsed body)."""

    def __init__(self, request: Request, name: str, response: Response | None = None) -> None:
        self.request = request
        self.name = name
        self.response = response
        self.limiter = get_limiter(request)
        self._tightest: Usage | None = None

    async def check(self, scope: str, identity: str) -> None:
        decision = await self.limiter.hit(
            self.name, scope, identity, usage=self.response is not None
        )
        usage = decision.usage
        if decision.exceeded is not None and usage is not None:
            await self._report(scope, decision.exceeded, decision.key)
            raise RateLimited(usage.reset_after, headers=usage.headers())
        if usage is None or self.response is None:
            return
        if self._tightest is None or usage.remaining < self._tightest.remaining:
            self._tightest = usage
            self.response.headers.update(usage.headers())

    async def account(self, identity: str) -> None:
        """Counts the request against the per-account limit. ``identity`` is an address
        or a user id; case and surrounding blanks do not make a new account."""
        await self.check("account", identity.strip().lower())

    async def _report(self, scope: str, item: RateLimitItem, key: str) -> None:
        # One event per limit, key and window: the marker lives as long as the window.
        marker = f"ratelimit:reported:{self.name}:{scope}:{key}"
        try:
            first = await self.limiter.store.set_if_absent(marker, b"1", ttl=item.get_expiry())
        except _STORE_ERRORS:
            return
        if not first:
            return
        event = RateLimitExceeded(name=self.name, scope=scope, policy=str(item), key=key[:12])
        log.warning("ratelimit.exceeded", limit=self.name, scope=scope, policy=event.policy)
        events: DomainEvents | None = getattr(self.request.app.state, "events", None)
        sessionmaker = getattr(self.request.state, "sessionmaker", None)
        if events is None or sessionmaker is None:
            return
        try:
            # The request fails with 429, so the event commits on its own.
            async with sessionmaker() as session, session.begin():
                await events.publish(session, event)
        except Exception as exc:
            # The 429 matters more than its audit row; a database outage must not
            # turn it into another answer.
            log.warning("ratelimit.report_failed", error_type=type(exc).__name__)


type KeyFunc = Callable[[Request], str]


@cache
def rate_limit(
    name: str, *, scope: Scope = "ip", key: KeyFunc = client_address
) -> Callable[[Request, Response], Awaitable[Throttle]]:
    """A dependency that counts the request against limit ``name`` for ``key(request)``
    (the client IP by default) and gives the route a :class:`Throttle` for the
    per-account check. Cached: the same arguments give the same dependency, which
    FastAPI then runs once per request."""

    async def dependency(request: Request, response: Response) -> Throttle:
        throttle = Throttle(request, name, response)
        await throttle.check(scope, key(request))
        return throttle

    dependency.__name__ = f"rate_limit_{name}"
    return dependency


async def global_rate_limit(request: Request) -> None:
    """The ceiling per client IP for the whole API (``AIXIATE_RATE_LIMIT_GLOBAL``); put
    it on every API router. It adds no headers to answers within the budget."""
    await Throttle(request, GLOBAL).check("ip", client_address(request))
