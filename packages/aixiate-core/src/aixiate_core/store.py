"""Shared key-value state (sessions, revocations, counters) behind one interface.

Redis when ``AIXIATE_REDIS_URL`` is set, so every replica sees the same state; an
in-process store otherwise, which is correct for exactly one process.
"""

import asyncio
import time
from typing import Annotated, Protocol

from fastapi import Depends, Request
from redis.asyncio import BlockingConnectionPool, Redis

from aixiate_core.settings import Settings

#: Connections per process; redis-py's own default for a pool.
REDIS_MAX_CONNECTIONS = 100


class KeyValueStore(Protocol):
    """Bytes values with optional TTLs; ``incr`` is atomic across every client of the store."""

    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, *keys: str) -> list[bytes | None]:
        """Several keys in one round trip (MGET)."""
        ...

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None: ...

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float | None = None) -> bool:
        """Stores only when the key does not exist; True when it was stored."""
        ...

    async def delete(self, *keys: str) -> int: ...

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Adds to a counter; ``ttl`` applies when this call created the key."""
        ...

    async def ttl(self, key: str) -> float | None:
        """Seconds left, or None when the key is missing or does not expire."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class Clock(Protocol):
    def __call__(self) -> float: ...


class MemoryStore:
    """A dict with expiry times. Single event loop, no awaits inside methods: atomic."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._data: dict[str, tuple[bytes, float | None]] = {}
        self._clock = clock or time.monotonic

    def _live(self, key: str) -> tuple[bytes, float | None] | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires = item[1]
        if expires is not None and expires <= self._clock():
            del self._data[key]
            return None
        return item

    def _expiry(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + ttl

    async def get(self, key: str) -> bytes | None:
        item = self._live(key)
        return item[0] if item else None

    async def get_many(self, *keys: str) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self._data[key] = (value, self._expiry(ttl))

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float | None = None) -> bool:
        if self._live(key) is not None:
            return False
        self._data[key] = (value, self._expiry(ttl))
        return True

    async def delete(self, *keys: str) -> int:
        removed = 0
        for key in keys:
            if self._live(key) is not None:
                del self._data[key]
                removed += 1
        return removed

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        item = self._live(key)
        if item is None:
            value, expires = amount, self._expiry(ttl)
        else:
            value, expires = int(item[0]) + amount, item[1]
        self._data[key] = (str(value).encode(), expires)
        return value

    async def ttl(self, key: str) -> float | None:
        item = self._live(key)
        if item is None or item[1] is None:
            return None
        return item[1] - self._clock()

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()


# INCRBY and the first PEXPIRE in one step, so a crash between them cannot leave a
# counter that never expires. Creation is told by EXISTS, not by the new value: a
# counter brought back to 0 still exists and must keep its expiry (or lack of one).
_INCR_WITH_TTL = """
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""


class RedisStore:
    """Commands are bounded by ``asyncio.timeout`` here rather than by redis-py's socket
    timeout (on by default since redis-py 8), which wraps every write in ``wait_for``, a
    task per command, and every read in a timeout of its own: together a fifth of a
    cached ``GET /users/me``. A Redis that stops answering still fails a command in time."""

    def __init__(self, client: Redis, prefix: str = "", *, timeout: float = 2.0) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout = timeout
        self._incr = client.register_script(_INCR_WITH_TTL)

    @classmethod
    def from_settings(cls, settings: Settings) -> "RedisStore":
        assert settings.redis_url is not None
        # A blocking pool: a burst above the pool size waits (up to the timeout) for a
        # free connection, where the default pool fails at once with "Too many connections".
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=REDIS_MAX_CONNECTIONS,
            timeout=settings.redis_timeout_seconds,
            socket_connect_timeout=settings.redis_timeout_seconds,
            socket_timeout=None,
            health_check_interval=30,
        )
        return cls(
            Redis.from_pool(pool), settings.redis_key_prefix, timeout=settings.redis_timeout_seconds
        )

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def get(self, key: str) -> bytes | None:
        async with asyncio.timeout(self.timeout):
            value = await self.client.get(self._k(key))
        return value.encode() if isinstance(value, str) else value

    async def get_many(self, *keys: str) -> list[bytes | None]:
        async with asyncio.timeout(self.timeout):
            values = await self.client.mget([self._k(key) for key in keys])
        return [value.encode() if isinstance(value, str) else value for value in values]

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        async with asyncio.timeout(self.timeout):
            await self.client.set(self._k(key), value, px=_ms(ttl))

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float | None = None) -> bool:
        async with asyncio.timeout(self.timeout):
            return bool(await self.client.set(self._k(key), value, px=_ms(ttl), nx=True))

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        async with asyncio.timeout(self.timeout):
            return int(await self.client.delete(*(self._k(k) for k in keys)))

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        async with asyncio.timeout(self.timeout):
            result = await self._incr(keys=[self._k(key)], args=[amount, _ms(ttl) or 0])
        return int(result)

    async def ttl(self, key: str) -> float | None:
        async with asyncio.timeout(self.timeout):
            millis = int(await self.client.pttl(self._k(key)))
        return None if millis < 0 else millis / 1000

    async def ping(self) -> None:
        async with asyncio.timeout(self.timeout):
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


def _ms(ttl: float | None) -> int | None:
    return None if ttl is None else max(1, int(ttl * 1000))


def create_store(settings: Settings) -> KeyValueStore:
    if settings.redis_url:
        return RedisStore.from_settings(settings)
    return MemoryStore()


def get_store(request: Request) -> KeyValueStore:
    store: KeyValueStore = request.state.store
    return store


StoreDep = Annotated[KeyValueStore, Depends(get_store)]
