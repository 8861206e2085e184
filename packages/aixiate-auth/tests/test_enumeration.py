"""Nothing tells a caller whether an address has an account: not the answers of login,
registration, password recovery and resend, and not the time login takes."""

import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from aixiate_auth.settings import AuthSettings
from aixiate_auth.state import AuthState
from aixiate_auth.testing import AuthAppFactory, UserFactory
from aixiate_core.settings import Settings
from aixiate_users.settings import UsersSettings
from aixiate_users.testing import PASSWORD, WRONG_PASSWORD
from fastapi import FastAPI

AUTH = "/api/v1/auth"
SAMPLES = 30


def comparable(response: httpx.Response) -> tuple[int, Any, str | None]:
    """What a caller sees, less what differs per request (the request id)."""
    body = response.json()
    if isinstance(body, dict):
        body.pop("request_id", None)
    return response.status_code, body, response.headers.get("www-authenticate")


class TestSameAnswers:
    async def test_login_unknown_address_and_wrong_password(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()

        known = await api.post(
            f"{AUTH}/login", json={"email": user.email, "password": WRONG_PASSWORD}
        )
        unknown = await api.post(
            f"{AUTH}/login", json={"email": "nobody-here@example.com", "password": WRONG_PASSWORD}
        )

        assert comparable(known) == comparable(unknown)
        assert known.status_code == 401

    @pytest.mark.parametrize(
        ("path", "extra"),
        [
            ("/register", {"password": "quiet-lantern-meadow-77"}),
            ("/password/forgot", {}),
            ("/verify-email/resend", {}),
        ],
    )
    async def test_known_and_unknown_addresses(
        self,
        api: httpx.AsyncClient,
        make_user: UserFactory,
        new_email: Callable[..., str],
        path: str,
        extra: dict[str, str],
    ) -> None:
        known = (await make_user(is_verified=False)).email

        answers = [
            await api.post(AUTH + path, json={"email": email, **extra})
            for email in (known, new_email("unknown"))
        ]

        assert comparable(answers[0]) == comparable(answers[1])
        assert answers[0].status_code == 202


class TestLoginTiming:
    """Unknown address and wrong password cost the same argon2 verification, so their
    times match. Relative, not absolute: medians of interleaved samples must be within
    a factor of 1.5 of each other, which a missing hash (a factor of 10 or more with the
    default parameters) could never meet."""

    @pytest.fixture
    def auth_app(self, make_auth_app: AuthAppFactory, app_settings: Settings) -> FastAPI:
        # The default argon2 parameters, so the hash dominates; the lockout stays on
        # (its store round trips are part of both paths) but never locks here.
        real = AuthSettings(_env_file=None, lockout_max_failures=10 * SAMPLES)
        return make_auth_app(app_settings, real, users_settings=UsersSettings(_env_file=None))

    async def test_unknown_address_takes_as_long_as_a_wrong_password(
        self, api: httpx.AsyncClient, auth_state: AuthState, make_user: UserFactory
    ) -> None:
        default_memory = UsersSettings.model_fields["argon2_memory_kib"].default
        assert auth_state.passwords.settings.argon2_memory_kib == default_memory
        user = await make_user(password_hash=await auth_state.passwords.hash(PASSWORD))
        times: dict[str, list[float]] = {"known": [], "unknown": []}

        async def timed(kind: str, email: str) -> None:
            started = time.perf_counter()
            response = await api.post(
                f"{AUTH}/login", json={"email": email, "password": WRONG_PASSWORD}
            )
            times[kind].append(time.perf_counter() - started)
            assert response.status_code == 401

        for n in range(2):  # warm-up: first connections, first statements
            await timed("known", user.email)
            await timed("unknown", f"warm-{n}@example.com")
        for samples in times.values():
            samples.clear()
        for n in range(SAMPLES):
            pair = [("known", user.email), ("unknown", f"nobody-{n}@example.com")]
            for kind, email in pair if n % 2 else reversed(pair):
                await timed(kind, email)

        ratio = statistics.median(times["unknown"]) / statistics.median(times["known"])
        assert 0.67 <= ratio <= 1.5, (ratio, times)
