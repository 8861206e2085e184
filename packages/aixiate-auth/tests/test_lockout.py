"""Account lockout over HTTP: locking, expiry, doubling, reset, admin unlock, audit and
email, with time moved by the test; and what happens when the store goes away."""

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import uuid4

import httpx
import pytest
from aixiate_auth.lockout import Lock, Lockout
from aixiate_auth.settings import AuthSettings
from aixiate_auth.state import AuthState
from aixiate_auth.testing import AuthAppVariant, UserFactory
from aixiate_core.settings import Settings
from aixiate_core.store import KeyValueStore, RedisStore
from aixiate_core.testing import (
    FakeClock,
    Sessions,
    TcpProxy,
    assert_problem,
    forget_prefixed,
    proxied,
    redis_server_url,
    serve,
    serve_from,
)
from aixiate_users.passwords import PasswordCheck
from aixiate_users.testing import PASSWORD, WRONG_PASSWORD, audit_events
from fastapi import FastAPI

LOGIN = "/api/v1/auth/login"
TOKEN = "/api/v1/auth/token"
USERS = "/api/v1/users"
DEAD_REDIS = "redis://127.0.0.1:9/0"  # the discard port: nothing listens there


@pytest.fixture
def clock(auth_state: AuthState) -> FakeClock:
    fake = FakeClock()
    auth_state.lockout.clock = fake
    return fake


async def attempt(
    api: httpx.AsyncClient, email: str, password: str = WRONG_PASSWORD
) -> httpx.Response:
    return await api.post(LOGIN, json={"email": email, "password": password})


async def fail(api: httpx.AsyncClient, email: str, times: int) -> list[int]:
    return [(await attempt(api, email)).status_code for _ in range(times)]


async def lock(api: httpx.AsyncClient, email: str) -> int:
    """Fails until locked; the Retry-After of the locking answer."""
    statuses = await fail(api, email, 4)
    assert statuses == [401] * 4
    locking = await attempt(api, email)
    assert_problem(locking, 429, "account_locked")
    return int(locking.headers["retry-after"])


class CountingVerify:
    """Wraps the password service's verify to count calls (hash work)."""

    def __init__(self, auth_state: AuthState) -> None:
        self.calls = 0
        self._verify = auth_state.passwords.verify

    async def __call__(self, password: str, password_hash: str | None) -> PasswordCheck:
        self.calls += 1
        return await self._verify(password, password_hash)


class TestLocking:
    async def test_fifth_failure_locks_for_a_minute(
        self, api: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock
    ) -> None:
        user = await make_user()

        statuses = await fail(api, user.email, 4)
        locking = await attempt(api, user.email)

        assert statuses == [401] * 4
        body = assert_problem(locking, 429, "account_locked")
        assert body["status"] == 429
        assert body["request_id"] == locking.headers["x-request-id"]
        assert locking.headers["retry-after"] == "60"
        right = await attempt(api, user.email, PASSWORD)
        assert_problem(right, 429, "account_locked")
        assert right.headers["retry-after"] == "60"

    async def test_locked_account_costs_no_hash_work(
        self,
        api: httpx.AsyncClient,
        make_user: UserFactory,
        auth_state: AuthState,
        clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        user = await make_user()
        await lock(api, user.email)
        counting = CountingVerify(auth_state)
        monkeypatch.setattr(auth_state.passwords, "verify", counting)

        answers = [(await attempt(api, user.email, PASSWORD)).status_code for _ in range(5)]

        assert answers == [429] * 5
        assert counting.calls == 0

    async def test_unknown_address_locks_exactly_like_a_known_one(
        self, api: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock
    ) -> None:
        user = await make_user()
        unknown = f"nobody-{time.time_ns()}@example.com"

        known_answers = [await attempt(api, user.email) for _ in range(6)]
        unknown_answers = [await attempt(api, unknown) for _ in range(6)]

        def shape(r: httpx.Response) -> tuple[int, str, str | None]:
            return r.status_code, r.json()["code"], r.headers.get("retry-after")

        assert [shape(r) for r in known_answers] == [shape(r) for r in unknown_answers]
        assert [r.json()["detail"] for r in known_answers] == [
            r.json()["detail"] for r in unknown_answers
        ]

    async def test_address_is_matched_regardless_of_case_and_spaces(
        self, api: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock
    ) -> None:
        user = await make_user()
        spellings = [user.email, user.email.upper(), f"  {user.email}", user.email.title()]

        answers = [(await attempt(api, spellings[n % 4])).status_code for n in range(5)]

        assert answers == [401] * 4 + [429]

    async def test_failures_count_across_ips_and_both_login_routes(
        self, auth_app: FastAPI, make_user: UserFactory, auth_state: AuthState
    ) -> None:
        user = await make_user()
        peers = [f"198.51.100.{n}" for n in range(1, 6)]
        async with serve_from(auth_app, *peers) as clients:
            answers = []
            for n, client in enumerate(clients):
                if n % 2:
                    sent = await client.post(
                        TOKEN, data={"username": user.email, "password": WRONG_PASSWORD}
                    )
                else:
                    sent = await attempt(client, user.email)
                answers.append(sent.status_code)
            after = await attempt(clients[0], user.email, PASSWORD)

        assert answers == [401] * 4 + [429]
        assert_problem(after, 429, "account_locked")

    async def test_failures_after_the_right_password_do_not_count(
        self, api: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock
    ) -> None:
        unverified = await make_user(is_verified=False)
        inactive = await make_user(is_active=False)

        for user, code in ((unverified, "email_not_verified"), (inactive, "account_inactive")):
            for _ in range(7):
                assert_problem(await attempt(api, user.email, PASSWORD), 403, code)

    async def test_concurrent_failures_lock_once(
        self, api: httpx.AsyncClient, make_user: UserFactory, db: Sessions, clock: FakeClock
    ) -> None:
        user = await make_user()

        answers = await asyncio.gather(*(attempt(api, user.email) for _ in range(12)))

        # Four failures, the fifth locks; the rest were let in before the lock and fail
        # around it: refused as locked (or, racing the lock, as wrong), and none of them
        # starts another, longer lock.
        statuses = sorted(r.status_code for r in answers)
        assert statuses.count(401) >= 4
        assert statuses.count(429) >= 1
        assert set(statuses) == {401, 429}
        (locked,) = await audit_events(db, "auth.account.locked", about=user.id)
        assert locked.data["level"] == 1
        assert_problem(await attempt(api, user.email, PASSWORD), 429, "account_locked")
        assert (await attempt(api, user.email, PASSWORD)).headers["retry-after"] == "60"


class TestTime:
    async def test_lock_expires(
        self, api: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock
    ) -> None:
        user = await make_user()
        await lock(api, user.email)

        clock.advance(59)
        still = await attempt(api, user.email, PASSWORD)
        clock.advance(1)
        after = await attempt(api, user.email, PASSWORD)

        assert_problem(still, 429, "account_locked")
        assert still.headers["retry-after"] == "1"
        assert after.status_code == 200, after.text

    async def test_each_lock_of_a_series_doubles_up_to_the_cap(
        self, api: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock
    ) -> None:
        user = await make_user()
        durations = []
        for _ in range(6):
            durations.append(await lock(api, user.email))
            clock.advance(durations[-1])

        assert durations == [60, 120, 240, 480, 900, 900]

    async def test_escalation_forgets_after_the_quiet_period(
        self, api: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock
    ) -> None:
        user = await make_user()
        first = await lock(api, user.email)
        clock.advance(first)
        second = await lock(api, user.email)

        clock.advance(second + 12 * 3600)
        third = await lock(api, user.email)

        assert (first, second, third) == (60, 120, 60)

    async def test_failures_outside_the_window_do_not_count(
        self, api: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock
    ) -> None:
        user = await make_user()
        assert await fail(api, user.email, 4) == [401] * 4

        clock.advance(2 * 15 * 60)
        again = await fail(api, user.email, 4)

        assert again == [401] * 4
        assert_problem(await attempt(api, user.email), 429, "account_locked")

    async def test_failures_partly_inside_the_window_count_in_part(
        self, api: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock
    ) -> None:
        user = await make_user()
        # Start at the beginning of a bucket, so the next one is exactly 15 minutes on.
        clock.now = math.ceil(clock.now / 900) * 900
        assert await fail(api, user.email, 4) == [401] * 4

        # A quarter into the next bucket, three quarters of those four still count.
        clock.advance(900 + 225)
        statuses = await fail(api, user.email, 2)

        assert statuses == [401, 429]

    async def test_success_resets_the_failures_but_not_the_escalation(
        self, api: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock
    ) -> None:
        user = await make_user()
        assert await fail(api, user.email, 4) == [401] * 4
        assert (await attempt(api, user.email, PASSWORD)).status_code == 200
        assert await fail(api, user.email, 4) == [401] * 4
        first = await attempt(api, user.email)
        clock.advance(60)
        assert (await attempt(api, user.email, PASSWORD)).status_code == 200

        second = await lock(api, user.email)

        assert_problem(first, 429, "account_locked")
        assert first.headers["retry-after"] == "60"
        assert second == 120


class TestAuditAndEmail:
    async def test_lock_is_audited_and_emailed_once_per_series(
        self,
        api: httpx.AsyncClient,
        make_user: UserFactory,
        db: Sessions,
        mailbox: Any,
        clock: FakeClock,
    ) -> None:
        user = await make_user(full_name="Ada Lovelace")
        await lock(api, user.email)
        clock.advance(60)
        await lock(api, user.email)

        locked = await audit_events(db, "auth.account.locked", about=user.id)
        assert [(e.success, e.reason, e.data) for e in locked] == [
            (False, "too_many_failures", {"level": 1, "seconds": 60}),
            (False, "too_many_failures", {"level": 2, "seconds": 120}),
        ]
        assert locked[0].ip == "203.0.113.7"
        mails = await mailbox.to(user.email, "account_locked")
        assert len(mails) == 1
        text = mails[0].message.text
        assert "Ada Lovelace" in text
        assert "locked for 1 minutes" in text

    async def test_failed_logins_are_audited_with_the_reason_locked(
        self, api: httpx.AsyncClient, make_user: UserFactory, db: Sessions, clock: FakeClock
    ) -> None:
        user = await make_user()
        await lock(api, user.email)
        await attempt(api, user.email, PASSWORD)

        failed = await audit_events(db, "auth.login.failed", about=user.id)

        assert [e.reason for e in failed] == ["bad_password"] * 5 + ["locked"]
        assert all(e.success is False and e.actor_id == user.id for e in failed)

    async def test_unknown_address_gets_no_email_and_no_lock_event(
        self, api: httpx.AsyncClient, db: Sessions, mailbox: Any, clock: FakeClock
    ) -> None:
        unknown = f"ghost-{time.time_ns()}@example.com"
        before = len(await audit_events(db, "auth.account.locked"))

        await lock(api, unknown)

        assert len(await audit_events(db, "auth.account.locked")) == before
        assert await mailbox.to(unknown) == []


async def admin_token(api: httpx.AsyncClient, make_user: UserFactory) -> dict[str, str]:
    admin = await make_user(roles=["admin"])
    response = await attempt(api, admin.email, PASSWORD)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


class TestUnlock:
    async def test_only_admins_may_unlock(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        member = await attempt(api, (await make_user()).email, PASSWORD)
        headers = {"Authorization": f"Bearer {member.json()['access_token']}"}

        response = await api.post(f"{USERS}/{user.id}/unlock", headers=headers)

        assert_problem(response, 403, "forbidden")

    async def test_unknown_user_is_404(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        headers = await admin_token(api, make_user)

        response = await api.post(f"{USERS}/{uuid4()}/unlock", headers=headers)

        assert_problem(response, 404, "not_found")

    async def test_the_admin_is_the_actor(
        self, api: httpx.AsyncClient, make_user: UserFactory, db: Sessions
    ) -> None:
        admin = await make_user(roles=["admin"])
        login = await attempt(api, admin.email, PASSWORD)
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        user = await make_user()

        response = await api.post(f"{USERS}/{user.id}/unlock", headers=headers)

        assert response.status_code == 204
        (event,) = await audit_events(db, "admin.user.unlocked", about=user.id)
        assert event.actor_id == admin.id

    async def test_admin_unlock_clears_the_lock_at_once(
        self, api: httpx.AsyncClient, make_user: UserFactory, db: Sessions, clock: FakeClock
    ) -> None:
        user = await make_user()
        headers = await admin_token(api, make_user)
        await lock(api, user.email)

        unlocked = await api.post(f"{USERS}/{user.id}/unlock", headers=headers)

        assert unlocked.status_code == 204, unlocked.text
        assert (await attempt(api, user.email, PASSWORD)).status_code == 200
        (event,) = await audit_events(db, "auth.account.unlocked", about=user.id)
        assert event.data == {"was_locked": True}
        assert event.request_id == unlocked.headers["x-request-id"]
        assert len(await audit_events(db, "admin.user.unlocked", about=user.id)) == 1

    async def test_unlock_also_forgets_the_escalation_and_failures(
        self, api: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock
    ) -> None:
        user = await make_user()
        headers = await admin_token(api, make_user)
        clock.advance(await lock(api, user.email))
        await lock(api, user.email)
        assert (await api.post(f"{USERS}/{user.id}/unlock", headers=headers)).status_code == 204

        assert await lock(api, user.email) == 60
        clock.advance(60)
        assert await fail(api, user.email, 2) == [401, 401]
        assert (await api.post(f"{USERS}/{user.id}/unlock", headers=headers)).status_code == 204
        assert await fail(api, user.email, 4) == [401] * 4

    async def test_unlocking_an_unlocked_account_says_so_in_the_audit(
        self, api: httpx.AsyncClient, make_user: UserFactory, db: Sessions, clock: FakeClock
    ) -> None:
        user = await make_user()
        headers = await admin_token(api, make_user)

        response = await api.post(f"{USERS}/{user.id}/unlock", headers=headers)

        assert response.status_code == 204
        (event,) = await audit_events(db, "auth.account.unlocked", about=user.id)
        assert event.data == {"was_locked": False}

    async def test_password_reset_unlocks(
        self, api: httpx.AsyncClient, make_user: UserFactory, mailbox: Any, clock: FakeClock
    ) -> None:
        user = await make_user()
        await lock(api, user.email)
        forgot = await api.post("/api/v1/auth/password/forgot", json={"email": user.email})
        assert forgot.status_code == 202
        token = (await mailbox.last(user.email, "password_reset")).token

        reset = await api.post(
            "/api/v1/auth/password/reset",
            json={"token": token, "new_password": "quiet-lantern-meadow-77"},
        )

        assert reset.status_code == 204, reset.text
        after = await attempt(api, user.email, "quiet-lantern-meadow-77")
        assert after.status_code == 200, after.text


class TestSettings:
    async def test_thresholds_are_settings(
        self, app_with: AuthAppVariant, make_user: UserFactory
    ) -> None:
        app = app_with(lockout_max_failures=2, lockout_base_seconds=30, lockout_max_seconds=45)
        user = await make_user()
        async with serve(app) as client:
            app.state.auth.lockout.clock = clock = FakeClock()
            first = await fail(client, user.email, 2)
            clock.advance(30)
            second = await fail(client, user.email, 2)
            retry = (await attempt(client, user.email)).headers["retry-after"]

        assert first == [401, 429]
        assert second == [401, 429]
        assert retry == "45"

    async def test_disabled_lockout_never_locks(
        self, app_with: AuthAppVariant, make_user: UserFactory
    ) -> None:
        app = app_with(lockout_enabled=False)
        user = await make_user()
        async with serve(app) as client:
            answers = await fail(client, user.email, 8)
            right = await attempt(client, user.email, PASSWORD)

        assert answers == [401] * 8
        assert right.status_code == 200

    def test_base_may_not_exceed_the_cap(
        self, make_auth_settings: Callable[..., AuthSettings]
    ) -> None:
        with pytest.raises(ValueError, match="lockout_base_seconds"):
            make_auth_settings(lockout_base_seconds=600, lockout_max_seconds=60)


class TestLockoutState:
    """The class on its own, against the run's store."""

    async def test_keys_hold_no_address(
        self, store: KeyValueStore, auth_settings: AuthSettings
    ) -> None:
        lockout = Lockout(store, auth_settings, secret="s" * 40, clock=FakeClock())
        email = "keys-test@example.com"
        for _ in range(5):
            await lockout.failed(email)

        key = lockout._lock_key(lockout._account(email))

        assert email not in key
        assert Lock.decode(await store.get(key)) is not None
        assert await lockout.locked_for(email.upper()) == 60

    async def test_a_corrupt_record_counts_as_no_lock(
        self, store: KeyValueStore, auth_settings: AuthSettings
    ) -> None:
        lockout = Lockout(store, auth_settings, secret="s" * 40, clock=FakeClock())
        email = "corrupt@example.com"
        await store.set(lockout._lock_key(lockout._account(email)), b"{not json")

        assert await lockout.locked_for(email) is None
        assert await lockout.unlock(email) is False


# --- the store going away --------------------------------------------------------------------


class TestStoreOutage:
    """The apps here keep lockout state in a Redis the test can cut: through a TcpProxy
    on the run's Redis, or (without one) at an address where nothing answers."""

    @pytest.fixture
    async def proxied_redis(self) -> AsyncIterator[tuple[TcpProxy, str] | None]:
        """A proxy to the run's Redis and the URL through it; None without one."""
        redis_url = redis_server_url()
        if redis_url is None:
            yield None
            return
        async with proxied(redis_url, 6379) as through:
            yield through

    @pytest.fixture
    def proxy(self, proxied_redis: tuple[TcpProxy, str] | None) -> TcpProxy | None:
        return proxied_redis[0] if proxied_redis else None

    @pytest.fixture
    async def store(
        self, settings: Settings, proxied_redis: tuple[TcpProxy, str] | None
    ) -> AsyncIterator[RedisStore]:
        url = proxied_redis[1] if proxied_redis else DEAD_REDIS
        cut = RedisStore.from_settings(settings.model_copy(update={"redis_url": url}))
        yield cut
        await cut.close()
        await forget_prefixed(redis_server_url(), settings.redis_key_prefix)

    @pytest.mark.parametrize(
        ("mode", "status", "code"),
        [("fail_closed", 503, "service_unavailable"), ("fail_open", 401, "invalid_credentials")],
    )
    async def test_unreachable_store_follows_the_fail_mode(
        self,
        app_with: AuthAppVariant,
        make_user: UserFactory,
        proxy: TcpProxy | None,
        mode: str,
        status: int,
        code: str,
    ) -> None:
        user = await make_user()
        app = app_with(lockout_fail_mode=mode)
        async with serve(app) as client:
            if proxy is not None:
                await proxy.stop()
            answers = [await attempt(client, user.email) for _ in range(6)]

        for answer in answers:
            assert_problem(answer, status, code)
        if status == 503:
            assert answers[0].headers["retry-after"] == "5"

    @pytest.mark.skipif(redis_server_url() is None, reason="set AIXIATE_TEST_REDIS_URL")
    async def test_unlock_without_the_store_is_503(
        self, app_with: AuthAppVariant, make_user: UserFactory, proxy: TcpProxy | None
    ) -> None:
        # Fail-open lets the admin log in without the store's lockout check; the unlock
        # itself must not claim success it did not have.
        user = await make_user()
        app = app_with(lockout_fail_mode="fail_open")
        async with serve(app) as client:
            headers = await admin_token(client, make_user)
            if proxy is not None:
                await proxy.stop()
            response = await client.post(f"{USERS}/{user.id}/unlock", headers=headers)

        assert_problem(response, 503, "service_unavailable")

    @pytest.mark.skipif(redis_server_url() is None, reason="set AIXIATE_TEST_REDIS_URL")
    async def test_recovers_when_redis_returns(
        self, app_with: AuthAppVariant, make_user: UserFactory, proxy: TcpProxy | None
    ) -> None:
        assert proxy is not None
        user = await make_user()
        async with serve(app_with()) as client:
            before = await fail(client, user.email, 2)
            await proxy.stop()
            during = await fail(client, user.email, 2)
            await proxy.start()
            after = await fail(client, user.email, 3)

        assert before == [401, 401]
        assert during == [503, 503]
        # Counting resumes where it stopped: failures three to five, the fifth locks.
        assert after == [401, 401, 429]
