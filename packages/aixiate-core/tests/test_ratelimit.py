"""Rate limits: the limiter over both storages, the dependencies, the 429 problem and its
headers, client IPs, sampled reporting, and what happens when Redis goes away."""

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import httpx
import pytest
from aixiate_core.crypto import keyed_digest
from aixiate_core.errors import PROBLEM_CONTENT_TYPE
from aixiate_core.events import DomainEvents
from aixiate_core.ratelimit import (
    GLOBAL,
    Decision,
    LimiterDep,
    RateLimiter,
    RateLimitExceeded,
    Throttle,
    client_address,
    global_rate_limit,
    rate_limit,
)
from aixiate_core.settings import Settings
from aixiate_core.store import MemoryStore
from aixiate_core.testing import proxied, redis_server_url, serve, serve_from
from fastapi import APIRouter, Depends, FastAPI
from limits.aio.storage import MemoryStorage
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request

type AppFactory = Callable[[Settings, APIRouter], FastAPI]

PEER = "203.0.113.7"  # the address serve() connects from
DEAD_REDIS = "redis://127.0.0.1:9/0"  # the discard port: nothing listens there


# Counters live in the shared Redis under the test's prefix.
pytestmark = pytest.mark.usefixtures("forget_redis")


def limited(settings: Settings, **overrides: Any) -> Settings:
    """The test settings with limiting on and small limits (plus ``overrides``)."""
    values: dict[str, Any] = {
        "rate_limit_enabled": True,
        "rate_limit_global": "50/minute",
        "rate_limit_login_per_ip": "3/minute",
        "rate_limit_login_per_account": "2/minute",
    }
    return settings.model_copy(update=values | overrides)


def limited_routes() -> APIRouter:
    router = APIRouter(dependencies=[Depends(global_rate_limit)])

    @router.post("/login")
    async def login(
        body: dict[str, str], limit: Annotated[Throttle, Depends(rate_limit("login"))]
    ) -> dict[str, bool]:
        await limit.account(body["email"])
        return {"ok": True}

    @router.post("/token")
    async def token(limit: Annotated[Throttle, Depends(rate_limit("login"))]) -> dict[str, bool]:
        return {"ok": True}

    @router.get("/open")
    async def unlimited() -> dict[str, bool]:
        return {"ok": True}

    return router


async def login(client: httpx.AsyncClient, email: str = "a@example.com", **kw: Any) -> Any:
    return await client.post("/login", json={"email": email}, **kw)


# --- settings ------------------------------------------------------------------------------


class TestSettings:
    def test_defaults_parse_and_are_on(self) -> None:
        settings = Settings(_env_file=None)

        assert settings.rate_limit_enabled is True
        limits = settings.rate_limits()
        assert limits["rate_limit_global"] == "600/minute"
        assert limits["rate_limit_login_per_ip"] == "20/minute;200/hour"
        assert "rate_limit_refresh_per_ip" in limits

    def test_environment_names(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIXIATE_RATE_LIMIT_ENABLED", "false")
        monkeypatch.setenv("AIXIATE_RATE_LIMIT_LOGIN_PER_ACCOUNT", "4 per minute")
        monkeypatch.setenv("AIXIATE_RATE_LIMIT_REGISTER_PER_IP", "")

        settings = Settings(_env_file=None)

        assert settings.rate_limit_enabled is False
        assert settings.rate_limits()["rate_limit_login_per_account"] == "4 per minute"
        assert "rate_limit_register_per_ip" not in settings.rate_limits()

    def test_refuses_a_limit_it_cannot_parse(self) -> None:
        with pytest.raises(ValidationError, match="rate_limit_login_per_ip"):
            Settings(_env_file=None, rate_limit_login_per_ip="10/fortnight")


# --- the limiter itself ----------------------------------------------------------------------


@pytest.fixture
async def limiter(settings: Settings) -> AsyncIterator[RateLimiter]:
    built = RateLimiter.from_settings(limited(settings), MemoryStore())
    yield built
    # Redis keys live under the test's own prefix; forget them for the next test.
    await built.storage.reset()
    await built.close()


async def login_hits(settings: Settings, count: int) -> list[Decision]:
    """``count`` logins from one address on a limiter of its own, forgotten afterwards."""
    limiter = RateLimiter.from_settings(settings, MemoryStore())
    try:
        return [await limiter.hit("login", "ip", PEER) for _ in range(count)]
    finally:
        await limiter.storage.reset()
        await limiter.close()


class TestLimiter:
    async def test_allows_the_budget_then_refuses(self, limiter: RateLimiter) -> None:
        decisions = [await limiter.hit("login", "ip", PEER) for _ in range(4)]

        assert [d.allowed for d in decisions] == [True, True, True, False]
        remaining = [d.usage.remaining for d in decisions if d.usage]
        assert remaining == [2, 1, 0, 0]
        refused = decisions[-1].usage
        assert refused is not None
        assert refused.limit == 3
        assert 1 <= refused.reset_after <= 60

    async def test_identities_names_and_scopes_have_their_own_budgets(
        self, limiter: RateLimiter
    ) -> None:
        for _ in range(3):
            assert (await limiter.hit("login", "ip", PEER)).allowed

        assert not (await limiter.hit("login", "ip", PEER)).allowed
        assert (await limiter.hit("login", "ip", "198.51.100.1")).allowed
        assert (await limiter.hit("login", "account", PEER)).allowed
        assert (await limiter.hit(GLOBAL, "ip", PEER)).allowed

    async def test_several_limits_under_one_name_all_apply(self, settings: Settings) -> None:
        both = limited(settings, rate_limit_login_per_ip="5/minute;2/hour")

        decisions = await login_hits(both, 3)

        assert [d.allowed for d in decisions] == [True, True, False]
        assert decisions[-1].usage is not None
        assert decisions[-1].usage.limit == 2

    async def test_an_unconfigured_limit_allows_everything(self, limiter: RateLimiter) -> None:
        decisions = [await limiter.hit("no_such_limit", "ip", PEER) for _ in range(50)]

        assert all(d.allowed and d.usage is None for d in decisions)

    async def test_disabled_allows_everything(self, settings: Settings) -> None:
        off = limited(settings, rate_limit_enabled=False)

        decisions = await login_hits(off, 10)

        assert all(d.allowed for d in decisions)

    async def test_moving_window_strategy(self, settings: Settings) -> None:
        moving = limited(settings, rate_limit_strategy="moving-window")

        decisions = await login_hits(moving, 4)

        assert [d.allowed for d in decisions] == [True, True, True, False]

    async def test_keys_hold_digests_not_identities(self, limiter: RateLimiter) -> None:
        email = "someone@example.com"
        await limiter.hit("login", "account", email)

        digest = keyed_digest(limiter.settings.secret(), email)
        assert limiter.digest(email) == digest
        assert email not in digest
        assert keyed_digest("another secret", email) != digest

    async def test_clear_restores_the_budget(self, limiter: RateLimiter) -> None:
        for _ in range(4):
            await limiter.hit("login", "ip", PEER)

        await limiter.clear("login", "ip", PEER)

        assert (await limiter.hit("login", "ip", PEER)).allowed


class TestClientAddress:
    @pytest.mark.parametrize(
        ("ip", "key"),
        [
            ("203.0.113.7", "203.0.113.7"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
            ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            (None, "unknown"),
        ],
    )
    def test_ipv6_is_counted_per_64(self, ip: str | None, key: str) -> None:
        scope: dict[str, Any] = {"type": "http", "headers": [], "client": (ip, 1) if ip else None}

        assert client_address(Request(scope)) == key


# --- the dependencies over HTTP --------------------------------------------------------------


@pytest.fixture
def app(make_app: AppFactory, settings: Settings) -> FastAPI:
    return make_app(limited(settings), limited_routes())


class TestRoutes:
    async def test_answers_429_problem_with_retry_after_and_ratelimit_headers(
        self, client: httpx.AsyncClient
    ) -> None:
        for n in range(3):
            assert (await login(client, f"user{n}@example.com")).status_code == 200

        refused = await login(client, "user9@example.com")

        assert refused.status_code == 429
        assert refused.headers["content-type"] == PROBLEM_CONTENT_TYPE
        body = refused.json()
        assert body["code"] == "rate_limited"
        assert body["status"] == 429
        assert body["request_id"] == refused.headers["x-request-id"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["ratelimit-limit"] == "3"
        assert refused.headers["ratelimit-remaining"] == "0"
        assert refused.headers["ratelimit-reset"] == refused.headers["retry-after"]

    async def test_successful_answers_carry_the_tightest_budget(
        self, client: httpx.AsyncClient
    ) -> None:
        first = await login(client, "one@example.com")
        second = await login(client, "one@example.com")

        # Per IP 3/minute, per account 2/minute: the account's budget is the tighter one.
        assert (first.headers["ratelimit-limit"], first.headers["ratelimit-remaining"]) == (
            "2",
            "1",
        )
        assert second.headers["ratelimit-remaining"] == "0"
        assert int(second.headers["ratelimit-reset"]) >= 1

    async def test_per_account_limit_holds_across_ips(self, app: FastAPI) -> None:
        async with serve_from(app, "198.51.100.1", "198.51.100.2") as (one, two):
            assert (await login(one, "Victim@Example.com")).status_code == 200
            assert (await login(two, " victim@example.com")).status_code == 200

            third = await login(one, "victim@example.com")

        assert third.status_code == 429
        assert third.headers["ratelimit-limit"] == "2"

    async def test_routes_naming_one_limit_share_its_budget(
        self, client: httpx.AsyncClient
    ) -> None:
        assert (await login(client, "x@example.com")).status_code == 200
        assert (await client.post("/token")).status_code == 200
        assert (await client.post("/token")).status_code == 200

        assert (await client.post("/token")).status_code == 429
        assert (await login(client, "y@example.com")).status_code == 429

    async def test_global_ceiling_covers_every_route(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        app = make_app(limited(settings, rate_limit_global="4/minute"), limited_routes())
        async with serve(app) as client:
            answers = [(await client.get("/open")).status_code for _ in range(4)]
            refused = await client.get("/open")
            limited_route = await login(client)
            health = await client.get("/health/live")

        assert answers == [200] * 4
        assert refused.status_code == 429
        assert refused.json()["code"] == "rate_limited"
        assert "retry-after" in refused.headers
        # Answers within the global budget carry no headers; the exceeded one does.
        assert refused.headers["ratelimit-limit"] == "4"
        assert limited_route.status_code == 429
        assert health.status_code == 200

    async def test_disabled_turns_every_limit_off(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        off = limited(settings, rate_limit_enabled=False, rate_limit_global="1/minute")
        async with serve(make_app(off, limited_routes())) as client:
            answers = [(await login(client)).status_code for _ in range(10)]

        assert answers == [200] * 10


async def forwarded_logins(
    client: httpx.AsyncClient, count: int, forwarded_for: Callable[[int], str]
) -> list[int]:
    """The statuses of ``count`` logins of different users, the n-th one with
    ``X-Forwarded-For: forwarded_for(n)``."""
    return [
        (
            await login(
                client, f"user{n}@example.com", headers={"X-Forwarded-For": forwarded_for(n)}
            )
        ).status_code
        for n in range(count)
    ]


class TestClientIp:
    async def test_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        trusting = limited(settings, trusted_proxies=["10.0.0.0/8"])
        async with serve(make_app(trusting, limited_routes())) as client:
            answers = await forwarded_logins(client, 5, lambda n: f"198.51.100.{n}, 10.0.0.{n}")

        assert answers == [200, 200, 200, 429, 429]

    async def test_forwarded_for_from_a_trusted_proxy_separates_clients(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        trusting = limited(settings, trusted_proxies=["10.0.0.0/8"])
        app = make_app(trusting, limited_routes())
        async with serve_from(app, "10.0.0.5") as (proxy,):
            answers = await forwarded_logins(proxy, 8, lambda n: f"198.51.100.{n % 2}")

        # Two clients behind the proxy, three each: the fourth of each is refused.
        assert answers == [200] * 6 + [429] * 2


class TestReporting:
    async def test_one_event_per_limit_key_and_window(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        app = make_app(limited(settings), limited_routes())
        seen: list[RateLimitExceeded] = []

        async def record(_: AsyncSession, event: RateLimitExceeded) -> None:
            seen.append(event)

        app.state.events = DomainEvents()
        app.state.events.subscribe(RateLimitExceeded, record)
        async with serve_from(app, PEER, "198.51.100.9") as (client, other):
            answers = [(await client.post("/token")).status_code for _ in range(20)]
            await asyncio.gather(*(other.post("/token") for _ in range(6)))

        assert answers.count(429) == 17
        assert [(e.name, e.scope, e.policy) for e in seen] == [
            ("login", "ip", "3 per 1 minute"),
            ("login", "ip", "3 per 1 minute"),
        ]
        assert seen[0].key != seen[1].key
        assert PEER not in seen[0].key


# --- Redis going away ----------------------------------------------------------------------


class TestStoreOutage:
    @pytest.mark.parametrize(("mode", "status"), [("fail_closed", 503), ("fail_open", 200)])
    async def test_unreachable_redis_follows_the_fail_mode(
        self, make_app: AppFactory, settings: Settings, mode: str, status: int
    ) -> None:
        dead = limited(
            settings,
            redis_url=DEAD_REDIS,
            rate_limit_fail_mode=mode,
            rate_limit_global="",  # the ceiling has its own mode; keep it out of the way
        )
        async with serve(make_app(dead, limited_routes())) as client:
            answer = await client.post("/token")

        assert answer.status_code == status
        if status == 503:
            assert answer.json()["code"] == "service_unavailable"
            assert answer.headers["retry-after"] == "5"

    async def test_the_global_ceiling_fails_open_by_default(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        dead = limited(settings, redis_url=DEAD_REDIS)
        async with serve(make_app(dead, limited_routes())) as client:
            answer = await client.get("/open")

        assert answer.status_code == 200

    @pytest.mark.skipif(redis_server_url() is None, reason="set AIXIATE_TEST_REDIS_URL")
    @pytest.mark.parametrize(("mode", "status"), [("fail_closed", 503), ("fail_open", 200)])
    async def test_cut_and_restored_redis(
        self, make_app: AppFactory, settings: Settings, mode: str, status: int
    ) -> None:
        redis_url = redis_server_url()
        assert redis_url is not None
        async with proxied(redis_url, 6379) as (proxy, url):
            through = limited(settings, redis_url=url, rate_limit_fail_mode=mode)
            async with serve(make_app(through, limited_routes())) as client:
                before = [(await client.post("/token")).status_code for _ in range(2)]

                await proxy.stop()
                during = [(await client.post("/token")).status_code for _ in range(3)]

                await proxy.start()
                after = [(await client.post("/token")).status_code for _ in range(2)]

        assert before == [200, 200]
        assert during == [status] * 3
        # Back to counting where it left off: one left of three, then refused.
        assert after == [200, 429]


class TestLifespan:
    async def test_built_in_the_lifespan_and_closed_with_it(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        routes = limited_routes()
        seen: list[RateLimiter] = []

        @routes.get("/limiter")
        async def which(limiter: LimiterDep) -> None:
            seen.append(limiter)

        async with serve(make_app(limited(settings), routes)) as client:
            await client.get("/limiter")
            await client.get("/limiter")

        first, second = seen
        assert first is second
        assert first.limits("login", "ip")
        if isinstance(first.storage, MemoryStorage):
            assert first.storage.timer is None or first.storage.timer.done()
