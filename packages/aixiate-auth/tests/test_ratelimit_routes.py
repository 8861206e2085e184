"""Rate limits on the /auth routes: per client IP and per account, the 429 problem and
its headers, the sampled audit event, spoofed client IPs, and Redis going away."""

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from aixiate_audit import service as audit_service
from aixiate_auth.settings import AuthSettings
from aixiate_auth.state import AuthState
from aixiate_auth.testing import AuthAppFactory, UserFactory
from aixiate_core.errors import PROBLEM_CONTENT_TYPE
from aixiate_core.ratelimit import RateLimitExceeded
from aixiate_core.settings import Settings
from aixiate_core.testing import (
    Sessions,
    proxied,
    redis_server_url,
    serve,
    serve_from,
)
from aixiate_users.passwords import PasswordCheck
from aixiate_users.testing import PASSWORD, WRONG_PASSWORD, audit_events
from fastapi import FastAPI

AUTH = "/api/v1/auth"
DEAD_REDIS = "redis://127.0.0.1:9/0"  # the discard port: nothing listens there


#: Small limits, so a test reaches them in a few requests.
LIMITS: dict[str, Any] = {
    "rate_limit_enabled": True,
    "rate_limit_login_per_ip": "4/minute",
    "rate_limit_login_per_account": "2/minute",
    "rate_limit_refresh_per_ip": "2/minute",
    "rate_limit_register_per_ip": "3/minute",
    "rate_limit_register_per_account": "2/hour",
    "rate_limit_password_forgot_per_ip": "3/minute",
    "rate_limit_password_forgot_per_account": "2/hour",
    "rate_limit_password_reset_per_ip": "2/minute",
    "rate_limit_verify_email_resend_per_ip": "3/minute",
    "rate_limit_verify_email_resend_per_account": "2/hour",
    "rate_limit_oauth_per_ip": "2/minute",
    "rate_limit_mfa_per_ip": "2/minute",
}


# Counters live in the shared Redis under the test's prefix.
pytestmark = pytest.mark.usefixtures("forget_redis")


def wired(app: FastAPI) -> FastAPI:
    """As the service wires it (aixiate_api.wiring): refusals are audited."""
    app.state.events.subscribe(RateLimitExceeded, audit_service.on_rate_limited)
    return app


@pytest.fixture
def limited_settings(app_settings: Settings) -> Settings:
    return app_settings.model_copy(update=LIMITS)


@pytest.fixture
def auth_app(
    make_auth_app: AuthAppFactory, limited_settings: Settings, auth_settings: AuthSettings
) -> FastAPI:
    return wired(make_auth_app(limited_settings, auth_settings))


def refused(response: httpx.Response, limit: str) -> dict[str, Any]:
    """Asserts a 429 ``rate_limited`` problem with its headers; ``limit`` is the
    RateLimit-Limit expected."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    assert body["code"] == "rate_limited"
    assert body["request_id"] == response.headers["x-request-id"]
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    assert response.headers["ratelimit-limit"] == limit
    assert response.headers["ratelimit-remaining"] == "0"
    assert int(response.headers["ratelimit-reset"]) == retry_after
    return body


async def login(
    api: httpx.AsyncClient, email: str, password: str = WRONG_PASSWORD
) -> httpx.Response:
    return await api.post(f"{AUTH}/login", json={"email": email, "password": password})


def emails(n: int) -> list[str]:
    return [f"someone-{i}@example.com" for i in range(n)]


class TestLogin:
    async def test_per_ip_limit_refuses_before_any_hashing(
        self, api: httpx.AsyncClient, auth_state: AuthState, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls = 0
        verify = auth_state.passwords.verify

        async def counting(password: str, password_hash: str | None) -> PasswordCheck:
            nonlocal calls
            calls += 1
            return await verify(password, password_hash)

        monkeypatch.setattr(auth_state.passwords, "verify", counting)

        answers = [await login(api, email) for email in emails(6)]

        assert [a.status_code for a in answers] == [401] * 4 + [429] * 2
        refused(answers[4], "4")
        assert calls == 4

    async def test_login_and_token_share_one_budget(self, api: httpx.AsyncClient) -> None:
        first, second, third, fourth, fifth = emails(5)
        await login(api, first)
        await login(api, second)
        await api.post(f"{AUTH}/token", data={"username": third, "password": WRONG_PASSWORD})
        await api.post(f"{AUTH}/token", data={"username": fourth, "password": WRONG_PASSWORD})

        form = await api.post(f"{AUTH}/token", data={"username": fifth, "password": WRONG_PASSWORD})

        refused(form, "4")

    async def test_per_account_limit_holds_across_ips(
        self, auth_app: FastAPI, make_user: UserFactory
    ) -> None:
        user = await make_user()
        async with serve_from(auth_app, "198.51.100.1", "198.51.100.2", "198.51.100.3") as peers:
            one, two, three = peers
            answers = [
                await login(one, user.email),
                await login(two, user.email.upper()),
                await login(three, user.email, PASSWORD),
            ]

        assert [a.status_code for a in answers] == [401, 401, 429]
        refused(answers[2], "2")

    async def test_successful_login_carries_the_ratelimit_headers(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()

        response = await login(api, user.email, PASSWORD)

        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        # Per IP 4/minute, per account 2/minute: the account's is the tighter budget.
        assert response.headers["ratelimit-limit"] == "2"
        assert response.headers["ratelimit-remaining"] == "1"
        assert int(response.headers["ratelimit-reset"]) >= 1

    async def test_spoofed_forwarded_for_does_not_reset_the_budget(
        self,
        make_auth_app: AuthAppFactory,
        limited_settings: Settings,
        auth_settings: AuthSettings,
    ) -> None:
        trusting = limited_settings.model_copy(update={"trusted_proxies": ["10.0.0.0/8"]})
        async with serve(wired(make_auth_app(trusting, auth_settings))) as api:
            answers = [
                await api.post(
                    f"{AUTH}/login",
                    json={"email": email, "password": WRONG_PASSWORD},
                    headers={"X-Forwarded-For": f"198.51.100.{n}"},
                )
                for n, email in enumerate(emails(6))
            ]

        assert [a.status_code for a in answers] == [401] * 4 + [429] * 2

    async def test_disabled_limits_leave_the_lockout_on(
        self,
        make_auth_app: AuthAppFactory,
        limited_settings: Settings,
        auth_settings: AuthSettings,
        make_user: UserFactory,
    ) -> None:
        off = limited_settings.model_copy(update={"rate_limit_enabled": False})
        user = await make_user()
        async with serve(wired(make_auth_app(off, auth_settings))) as api:
            others = [(await login(api, email)).status_code for email in emails(8)]
            own = [await login(api, user.email) for _ in range(5)]

        assert others == [401] * 8
        assert [a.status_code for a in own] == [401] * 4 + [429]
        assert own[-1].json()["code"] == "account_locked"


class TestOtherRoutes:
    async def test_refresh_is_limited_per_ip(self, api: httpx.AsyncClient) -> None:
        answers = [
            await api.post(f"{AUTH}/refresh", json={"refresh_token": f"not-a-token-{n}"})
            for n in range(3)
        ]

        assert [a.status_code for a in answers] == [401, 401, 429]
        refused(answers[2], "2")

    @pytest.mark.parametrize(
        ("path", "body", "status"),
        [
            ("/oauth/exchange", {"code": "not-a-code"}, 400),
            ("/login/mfa", {"mfa_token": "not-a-token", "code": "123456"}, 401),
        ],
    )
    async def test_social_login_and_the_second_step_are_limited_per_ip(
        self, api: httpx.AsyncClient, path: str, body: dict[str, str], status: int
    ) -> None:
        answers = [await api.post(AUTH + path, json=body) for _ in range(3)]

        assert [a.status_code for a in answers] == [status, status, 429]
        refused(answers[2], "2")

    async def test_password_reset_is_limited_per_ip(self, api: httpx.AsyncClient) -> None:
        answers = [
            await api.post(
                f"{AUTH}/password/reset",
                json={"token": f"guess-{n}", "new_password": "quiet-lantern-meadow-77"},
            )
            for n in range(3)
        ]

        assert [a.status_code for a in answers] == [400, 400, 429]
        refused(answers[2], "2")

    @pytest.mark.parametrize(
        ("path", "body"),
        [
            ("/register", {"password": "quiet-lantern-meadow-77"}),
            ("/password/forgot", {}),
            ("/verify-email/resend", {}),
        ],
    )
    async def test_per_account_limit_answers_alike_for_known_and_unknown_addresses(
        self,
        auth_app: FastAPI,
        make_user: UserFactory,
        path: str,
        body: dict[str, str],
    ) -> None:
        known = (await make_user(is_verified=False)).email
        unknown = f"unknown-{path.strip('/').replace('/', '-')}@example.com"
        peers = [f"198.51.100.{n}" for n in range(1, 7)]
        answers: dict[str, list[httpx.Response]] = {}
        async with serve_from(auth_app, *peers) as clients:
            for email, group in ((known, clients[:3]), (unknown, clients[3:])):
                answers[email] = [
                    await client.post(AUTH + path, json={**body, "email": email})
                    for client in group
                ]

        for responses in answers.values():
            assert [r.status_code for r in responses] == [202, 202, 429]
            refused(responses[2], "2")
        assert [r.json().get("detail") for r in answers[known][:2]] == [
            r.json().get("detail") for r in answers[unknown][:2]
        ]

    @pytest.mark.parametrize(
        ("path", "body"),
        [
            ("/register", {"password": "quiet-lantern-meadow-77"}),
            ("/password/forgot", {}),
            ("/verify-email/resend", {}),
        ],
    )
    async def test_per_ip_limit(
        self, api: httpx.AsyncClient, path: str, body: dict[str, str]
    ) -> None:
        answers = [
            await api.post(AUTH + path, json={**body, "email": email}) for email in emails(4)
        ]

        assert [a.status_code for a in answers] == [202, 202, 202, 429]
        refused(answers[3], "3")


class TestAudit:
    async def test_one_event_per_limit_key_and_window(
        self, auth_app: FastAPI, make_user: UserFactory, db: Sessions
    ) -> None:
        user = await make_user()
        # Addresses of this test's own: the audit table outlives each test.
        async with serve_from(auth_app, "192.0.2.201", "192.0.2.202") as (one, two):
            per_ip = [(await login(one, email)).status_code for email in emails(12)]
            per_account = [(await login(two, user.email)).status_code for _ in range(4)]

        assert per_ip.count(429) == 8
        assert per_account == [401, 401, 429, 429]
        limited = [
            e
            for e in await audit_events(db, "security.rate_limited")
            if e.ip in ("192.0.2.201", "192.0.2.202")
        ]
        assert [(e.reason, e.success, e.data["policy"]) for e in limited] == [
            ("login.ip", False, "4 per 1 minute"),
            ("login.account", False, "2 per 1 minute"),
        ]
        assert [e.ip for e in limited] == ["192.0.2.201", "192.0.2.202"]
        assert user.email not in str(limited[1].data)


# --- Redis going away ------------------------------------------------------------------------


class TestRedisOutage:
    @pytest.fixture
    def app_on(
        self, make_auth_app: AuthAppFactory, limited_settings: Settings, auth_settings: AuthSettings
    ) -> Callable[[str, str], FastAPI]:
        """``app_on(redis_url, fail_mode)``: the limited app, wired, counting in that Redis."""

        def make(redis_url: str, mode: str) -> FastAPI:
            update = {"redis_url": redis_url, "rate_limit_fail_mode": mode}
            return wired(make_auth_app(limited_settings.model_copy(update=update), auth_settings))

        return make

    @pytest.mark.parametrize(("mode", "status"), [("fail_closed", 503), ("fail_open", 202)])
    async def test_unreachable_redis_follows_the_fail_mode(
        self, app_on: Callable[[str, str], FastAPI], mode: str, status: int
    ) -> None:
        async with serve(app_on(DEAD_REDIS, mode)) as api:
            answer = await api.post(f"{AUTH}/password/forgot", json={"email": "a@example.com"})

        assert answer.status_code == status, answer.text
        if status == 503:
            assert answer.json()["code"] == "service_unavailable"
            assert answer.headers["retry-after"] == "5"

    @pytest.mark.skipif(redis_server_url() is None, reason="set AIXIATE_TEST_REDIS_URL")
    @pytest.mark.parametrize(("mode", "status"), [("fail_closed", 503), ("fail_open", 202)])
    async def test_cut_and_restored_redis(
        self, app_on: Callable[[str, str], FastAPI], mode: str, status: int
    ) -> None:
        redis_url = redis_server_url()
        assert redis_url is not None
        addresses = emails(6)
        async with proxied(redis_url, 6379) as (proxy, url), serve(app_on(url, mode)) as api:

            async def forgot(email: str) -> int:
                path = f"{AUTH}/password/forgot"
                return (await api.post(path, json={"email": email})).status_code

            before = [await forgot(email) for email in addresses[:2]]
            await proxy.stop()
            during = [await forgot(email) for email in addresses[2:4]]
            await proxy.start()
            after = [await forgot(email) for email in addresses[4:]]

        assert before == [202, 202]
        assert during == [status, status]
        # Per IP 3/minute, and it counts on where it stopped.
        assert after == [202, 429]
