"""Abuse protection of the assembled service.

Two real service processes on one PostgreSQL and one Redis: failed logins on either
count towards one lock, rate limits are one budget, an admin unlock on one frees the
account on the other, and locks expire and double (with one-second locks, so the
processes run on real time). Then the in-process app from ``create_app``, with the
lockout's clock in the test's hand: the default one-minute lock, its expiry and doubling
across two replicas, the admin unlock, and the global ceiling per IP.
"""

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any
from uuid import uuid4

import httpx
import pytest
from aixiate_auth.settings import AuthSettings
from aixiate_core.db import create_sessionmaker
from aixiate_core.settings import Settings
from aixiate_core.testing import (
    FakeClock,
    Sessions,
    bearer,
    postgres_server_url,
    redis_server_url,
    serve_from,
)
from aixiate_users.models import User
from aixiate_users.testing import PASSWORD, WRONG_PASSWORD, audit_events, create_user
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

API = "/api/v1"

type RunCommand = Callable[..., subprocess.CompletedProcess[str]]
type ServiceFactory = Callable[..., FastAPI]

shared_backends = pytest.mark.skipif(
    postgres_server_url() is None or redis_server_url() is None,
    reason=(
        "needs AIXIATE_TEST_DATABASE_URL and AIXIATE_TEST_REDIS_URL: replicas share "
        "lockout and rate-limit state through Redis; with the in-process store each "
        "process keeps its own by design"
    ),
)


async def login(
    client: httpx.AsyncClient, email: str, password: str = WRONG_PASSWORD
) -> httpx.Response:
    return await client.post(f"{API}/auth/login", json={"email": email, "password": password})


def code_of(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    return str(body.get("code", response.status_code))


@pytest.fixture
def db(engine: AsyncEngine) -> Sessions:
    return create_sessionmaker(engine)


# --- two service processes -------------------------------------------------------------------


@pytest.fixture(scope="module")
def service_extra_env() -> dict[str, str]:
    """One-second locks doubling to four, so real time can show expiry and doubling;
    generous login limits, so the lockout is what answers; a small limit to share."""
    return {
        "AIXIATE_LOCKOUT_BASE_SECONDS": "1",
        "AIXIATE_LOCKOUT_MAX_SECONDS": "4",
        "AIXIATE_RATE_LIMIT_LOGIN_PER_IP": "1000/minute",
        "AIXIATE_RATE_LIMIT_LOGIN_PER_ACCOUNT": "1000/minute",
        "AIXIATE_RATE_LIMIT_PASSWORD_FORGOT_PER_IP": "4/minute",
    }


async def signed_up(client: httpx.AsyncClient) -> str:
    """A new account (verification is off for these processes)."""
    email = f"abuse-{uuid4().hex[:12]}@example.com"
    registered = await client.post(
        f"{API}/auth/register", json={"email": email, "password": PASSWORD}
    )
    assert registered.status_code == 202, registered.text
    return email


def admin(aixiate_command: RunCommand) -> str:
    email = f"admin-{uuid4().hex[:12]}@example.com"
    created = aixiate_command(
        "user", "create", email, "--password-stdin", "--admin", "--verified", input=PASSWORD
    )
    assert created.returncode == 0, created.stderr
    return email


@shared_backends
class TestTwoProcesses:
    async def test_failures_on_one_count_towards_the_lock_on_the_other(
        self, clients: list[httpx.AsyncClient]
    ) -> None:
        a, b = clients
        email = await signed_up(a)

        answers = [await login(clients[n % 2], email) for n in range(5)]
        on_b = await login(b, email, PASSWORD)

        assert [r.status_code for r in answers] == [401] * 4 + [429]
        assert code_of(answers[-1]) == "account_locked"
        assert code_of(on_b) == "account_locked"
        assert on_b.headers["retry-after"] == "1"

    async def test_rate_limit_is_one_budget(self, clients: list[httpx.AsyncClient]) -> None:
        answers = []
        for n in range(6):
            forgot = await clients[n % 2].post(
                f"{API}/auth/password/forgot", json={"email": f"x{n}-{uuid4().hex}@example.com"}
            )
            answers.append(forgot)

        assert [r.status_code for r in answers] == [202] * 4 + [429] * 2
        refused = answers[4]
        assert code_of(refused) == "rate_limited"
        assert refused.headers["ratelimit-limit"] == "4"
        assert int(refused.headers["retry-after"]) >= 1
        # The per-account limit of the address is shared too (3 per hour by default).
        email = f"again-{uuid4().hex[:12]}@example.com"
        resent = [
            (
                await clients[n % 2].post(f"{API}/auth/verify-email/resend", json={"email": email})
            ).status_code
            for n in range(4)
        ]
        assert resent == [202, 202, 202, 429]

    async def test_lock_expires_and_the_next_one_doubles(
        self, clients: list[httpx.AsyncClient]
    ) -> None:
        a, b = clients
        email = await signed_up(b)
        first = [await login(a, email) for _ in range(5)][-1]
        assert first.headers["retry-after"] == "1"

        await asyncio.sleep(1.1)  # the first lock of a series lasts one second here
        assert (await login(b, email, PASSWORD)).status_code == 200
        second = [await login(b, email) for _ in range(5)][-1]

        assert code_of(second) == "account_locked"
        assert second.headers["retry-after"] == "2"
        assert code_of(await login(a, email, PASSWORD)) == "account_locked"

    async def test_admin_unlock_on_one_frees_the_account_on_the_other(
        self, clients: list[httpx.AsyncClient], aixiate_command: RunCommand, db: Sessions
    ) -> None:
        a, b = clients
        email = await signed_up(a)
        admin_login = await login(a, admin(aixiate_command), PASSWORD)
        token = admin_login.json()["access_token"]
        user_id = (await a.get(f"{API}/users", params={"q": email}, headers=bearer(token))).json()[
            "items"
        ][0]["id"]
        for _ in range(5):
            await login(b, email)
        assert code_of(await login(b, email, PASSWORD)) == "account_locked"

        unlocked = await a.post(f"{API}/users/{user_id}/unlock", headers=bearer(token))

        assert unlocked.status_code == 204, unlocked.text
        assert (await login(b, email, PASSWORD)).status_code == 200
        (event,) = await audit_events(db, "auth.account.unlocked", about=user_id)
        assert event.data == {"was_locked": True}
        locked = await audit_events(db, "auth.account.locked", about=user_id)
        assert [e.data["level"] for e in locked] == [1]


# --- the in-process service, time in the test's hand ----------------------------------------


def service(make_service: ServiceFactory, settings: Settings, **overrides: Any) -> FastAPI:
    auth = AuthSettings(_env_file=None, require_email_verification=False)
    values: dict[str, Any] = {"outbox_dispatcher_enabled": False, "housekeeping_enabled": False}
    return make_service(settings.model_copy(update=values | overrides), auth)


async def user_with_password(app: FastAPI, db: Sessions, **overrides: Any) -> User:
    password_hash = await app.state.auth.passwords.hash(PASSWORD)
    async with db() as session, session.begin():
        return await create_user(session, password_hash=password_hash, **overrides)


@pytest.fixture
async def replicas(
    settings: Settings, forget_redis: None, make_service: ServiceFactory
) -> AsyncIterator[tuple[list[httpx.AsyncClient], list[FastAPI], FakeClock]]:
    """Two apps of the service sharing the run's Redis, one client each, and one clock
    for the lockout of both. Without Redis an app's state is its own, so both clients
    talk to one app instead."""
    one = [service(make_service, settings)]
    apps = [*one, service(make_service, settings)] if settings.redis_url else one
    clock = FakeClock()
    async with AsyncExitStack() as stack:
        if len(apps) == 2:
            clients = [
                (await stack.enter_async_context(serve_from(app, "203.0.113.7")))[0] for app in apps
            ]
        else:
            clients = await stack.enter_async_context(
                serve_from(apps[0], "203.0.113.7", "203.0.113.8")
            )
        for app in apps:
            app.state.auth.lockout.clock = clock
        yield clients, apps, clock


class TestReplicasWithTheClockInHand:
    async def test_lock_expiry_doubling_and_unlock(
        self,
        replicas: tuple[list[httpx.AsyncClient], list[FastAPI], FakeClock],
        db: Sessions,
    ) -> None:
        (a, b), (app, *_), clock = replicas
        user = await user_with_password(app, db)
        admin_user = await user_with_password(app, db, roles=["admin"])
        token = (await login(b, admin_user.email, PASSWORD)).json()["access_token"]

        first = [(await login((a, b)[n % 2], user.email)).status_code for n in range(5)]
        clock.advance(59)
        still = await login(b, user.email, PASSWORD)
        clock.advance(1)
        free = await login(a, user.email, PASSWORD)
        second = [await login((b, a)[n % 2], user.email) for n in range(5)][-1]
        clock.advance(120)
        third = [await login(a, user.email) for _ in range(5)][-1]
        unlocked = await b.post(f"{API}/users/{user.id}/unlock", headers=bearer(token))
        after = await login(a, user.email, PASSWORD)
        fourth = [await login(b, user.email) for _ in range(5)][-1]

        assert first == [401] * 4 + [429]
        assert (code_of(still), still.headers["retry-after"]) == ("account_locked", "1")
        assert free.status_code == 200
        assert second.headers["retry-after"] == "120"
        assert third.headers["retry-after"] == "240"
        assert unlocked.status_code == 204
        assert after.status_code == 200
        # The unlock forgot the escalation as well.
        assert fourth.headers["retry-after"] == "60"
        levels = [
            e.data["level"] for e in await audit_events(db, "auth.account.locked", about=user.id)
        ]
        assert levels == [1, 2, 3, 1]


class TestGlobalCeiling:
    async def test_every_api_route_shares_the_ceiling_and_health_is_exempt(
        self, settings: Settings, forget_redis: None, make_service: ServiceFactory
    ) -> None:
        app = service(make_service, settings, rate_limit_enabled=True, rate_limit_global="5/minute")
        async with serve_from(app, "198.51.100.77", "198.51.100.78") as (client, other):
            answers = [
                (await client.get(f"{API}/users/me")).status_code,
                (await client.get("/.well-known/jwks.json")).status_code,
                (await login(client, "who@example.com")).status_code,
                (await client.post(f"{API}/auth/refresh", json={"refresh_token": "x"})).status_code,
                (await client.get(f"{API}/users/me")).status_code,
            ]
            refused = await client.get("/.well-known/jwks.json")
            health = [(await client.get("/health/live")).status_code for _ in range(10)]
            metrics = await client.get("/metrics")
            elsewhere = await other.get(f"{API}/users/me")

        assert answers == [401, 200, 401, 401, 401]
        assert refused.status_code == 429
        assert code_of(refused) == "rate_limited"
        assert refused.headers["ratelimit-limit"] == "5"
        assert health == [200] * 10
        assert metrics.status_code == 200
        assert elsewhere.status_code == 401

    async def test_off_when_rate_limiting_is_off(
        self, settings: Settings, forget_redis: None, make_service: ServiceFactory
    ) -> None:
        app = service(
            make_service, settings, rate_limit_enabled=False, rate_limit_global="2/minute"
        )
        async with serve_from(app, "198.51.100.79") as (client,):
            answers = [(await client.get("/.well-known/jwks.json")).status_code for _ in range(5)]

        assert answers == [200] * 5
