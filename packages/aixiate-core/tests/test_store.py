import asyncio
import time

import pytest
from aixiate_core.settings import Settings
from aixiate_core.store import KeyValueStore, MemoryStore, RedisStore, create_store
from aixiate_core.testing import FakeClock


async def eventually_missing(store: KeyValueStore, key: str, *, within: float = 5.0) -> bool:
    # Expiry is the server's business (Redis) or the wall clock's (memory): poll instead of
    # betting on one sleep, and give up only after a generous bound.
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await store.get(key) is None:
            return True
        await asyncio.sleep(0.02)
    return False


class TestStore:
    """The contract every KeyValueStore keeps; runs on Redis when the run has one."""

    async def test_missing_key_is_none(self, store: KeyValueStore) -> None:
        assert await store.get("missing") is None
        assert await store.ttl("missing") is None

    async def test_set_then_get(self, store: KeyValueStore) -> None:
        await store.set("k", b"\x00value\xff")

        assert await store.get("k") == b"\x00value\xff"
        assert await store.ttl("k") is None

    async def test_set_with_ttl_reports_time_left(self, store: KeyValueStore) -> None:
        await store.set("k", b"v", ttl=60)

        left = await store.ttl("k")
        assert left is not None
        assert 0 < left <= 60

    async def test_set_with_ttl_expires(self, store: KeyValueStore) -> None:
        await store.set("short", b"v", ttl=0.05)
        await store.set("long", b"v", ttl=60)

        assert await eventually_missing(store, "short")
        assert await store.get("long") == b"v"

    async def test_set_replaces_value_and_ttl(self, store: KeyValueStore) -> None:
        await store.set("k", b"old", ttl=60)
        await store.set("k", b"new")

        assert await store.get("k") == b"new"
        assert await store.ttl("k") is None

    async def test_set_if_absent_stores_only_once(self, store: KeyValueStore) -> None:
        assert await store.set_if_absent("k", b"first", ttl=60) is True
        assert await store.set_if_absent("k", b"second") is False

        assert await store.get("k") == b"first"
        left = await store.ttl("k")
        assert left is not None
        assert 0 < left <= 60

    async def test_set_if_absent_after_expiry(self, store: KeyValueStore) -> None:
        await store.set("k", b"old", ttl=0.05)
        assert await eventually_missing(store, "k")

        assert await store.set_if_absent("k", b"new") is True
        assert await store.get("k") == b"new"

    async def test_delete_counts_removed_keys(self, store: KeyValueStore) -> None:
        await store.set("a", b"1")
        await store.set("b", b"2")

        assert await store.delete("a", "b", "never-set") == 2
        assert await store.get("a") is None
        assert await store.get("b") is None

    async def test_delete_nothing(self, store: KeyValueStore) -> None:
        assert await store.delete() == 0

    async def test_incr_starts_from_zero(self, store: KeyValueStore) -> None:
        assert await store.incr("n") == 1
        assert await store.incr("n", 5) == 6
        assert await store.incr("n", -2) == 4
        assert await store.get("n") == b"4"

    async def test_incr_is_atomic_under_concurrency(self, store: KeyValueStore) -> None:
        results = await asyncio.gather(*(store.incr("n", ttl=60) for _ in range(200)))

        assert sorted(results) == list(range(1, 201))
        assert await store.get("n") == b"200"

    async def test_incr_ttl_applies_on_creation(self, store: KeyValueStore) -> None:
        await store.incr("n", ttl=60)

        left = await store.ttl("n")
        assert left is not None
        assert 0 < left <= 60

    async def test_incr_ttl_does_not_extend_existing_counter(self, store: KeyValueStore) -> None:
        await store.incr("n", ttl=60)
        await store.incr("n", ttl=3600)

        left = await store.ttl("n")
        assert left is not None
        assert left <= 60

    async def test_incr_ttl_ignored_for_existing_key_without_ttl(
        self, store: KeyValueStore
    ) -> None:
        await store.incr("n")
        await store.incr("n", ttl=60)

        assert await store.ttl("n") is None

    async def test_incr_ttl_ignored_when_existing_value_equals_amount(
        self, store: KeyValueStore
    ) -> None:
        # A counter that was brought back to 0 still exists; adding to it creates nothing.
        await store.set("n", b"0")

        assert await store.incr("n", ttl=60) == 1
        assert await store.ttl("n") is None

    async def test_incr_without_ttl_never_expires(self, store: KeyValueStore) -> None:
        await store.incr("n")

        assert await store.ttl("n") is None

    async def test_ping(self, store: KeyValueStore) -> None:
        await store.ping()


class TestMemoryStore:
    async def test_expires_at_ttl(self) -> None:
        clock = FakeClock(1000.0)
        store = MemoryStore(clock=clock)
        await store.set("k", b"v", ttl=10)

        clock.advance(9.5)
        assert await store.get("k") == b"v"
        assert await store.ttl("k") == pytest.approx(0.5)

        clock.advance(0.5)
        assert await store.get("k") is None
        assert await store.ttl("k") is None

    async def test_expired_key_is_absent_for_set_if_absent(self) -> None:
        clock = FakeClock(1000.0)
        store = MemoryStore(clock=clock)
        await store.set("k", b"old", ttl=1)

        clock.advance(1)

        assert await store.set_if_absent("k", b"new") is True
        assert await store.get("k") == b"new"

    async def test_expired_key_is_not_counted_as_deleted(self) -> None:
        clock = FakeClock(1000.0)
        store = MemoryStore(clock=clock)
        await store.set("k", b"v", ttl=1)

        clock.advance(2)

        assert await store.delete("k") == 0

    async def test_expired_counter_restarts_with_fresh_ttl(self) -> None:
        clock = FakeClock(1000.0)
        store = MemoryStore(clock=clock)
        await store.incr("n", 3, ttl=10)

        clock.advance(10)

        assert await store.incr("n", ttl=30) == 1
        assert await store.ttl("n") == pytest.approx(30)

    async def test_counter_keeps_its_first_expiry(self) -> None:
        clock = FakeClock(1000.0)
        store = MemoryStore(clock=clock)
        await store.incr("n", ttl=10)

        clock.advance(6)
        assert await store.incr("n", ttl=10) == 2

        clock.advance(4)
        assert await store.get("n") is None

    async def test_close_forgets_everything(self) -> None:
        store = MemoryStore()
        await store.set("k", b"v")

        await store.close()

        assert await store.get("k") is None


class TestCreateStore:
    async def test_memory_without_redis_url(self) -> None:
        store = create_store(Settings(_env_file=None, env="test", redis_url=None))

        assert isinstance(store, MemoryStore)

    async def test_redis_with_redis_url(self) -> None:
        # Building the client does not connect, so no server is needed here.
        store = create_store(
            Settings(
                _env_file=None, env="test", redis_url="redis://127.0.0.1:1/0", redis_key_prefix="p:"
            )
        )
        try:
            assert isinstance(store, RedisStore)
            assert store.prefix == "p:"
        finally:
            await store.close()
