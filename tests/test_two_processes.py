"""Two processes of the real service on one PostgreSQL and one Redis behave as one:
a session ended on either is refused by the other on the very next request."""

from typing import Any
from uuid import uuid4

import httpx
import pytest
from aixiate_core.testing import bearer, postgres_server_url, redis_server_url
from aixiate_users.testing import PASSWORD

pytestmark = pytest.mark.skipif(
    postgres_server_url() is None or redis_server_url() is None,
    reason=(
        "needs AIXIATE_TEST_DATABASE_URL and AIXIATE_TEST_REDIS_URL: with SQLite and the "
        "in-process store the service is single-process by design"
    ),
)

API = "/api/v1"


async def signed_up(client: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    """A new account (verification is off for these processes) and its first login."""
    email = f"two-{uuid4().hex[:12]}@example.com"
    registered = await client.post(
        f"{API}/auth/register", json={"email": email, "password": PASSWORD}
    )
    assert registered.status_code == 202, registered.text
    login = await client.post(f"{API}/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    pair: dict[str, Any] = login.json()
    return email, pair


async def me(client: httpx.AsyncClient, pair: dict[str, Any]) -> httpx.Response:
    return await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))


async def refresh(client: httpx.AsyncClient, pair: dict[str, Any]) -> httpx.Response:
    return await client.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]})


class TestTwoProcesses:
    async def test_logout_on_one_is_refused_by_the_other_at_once(
        self, clients: list[httpx.AsyncClient]
    ) -> None:
        a, b = clients
        email, pair = await signed_up(a)
        before = await me(b, pair)
        assert before.status_code == 200, before.text
        assert before.json()["email"] == email

        logout = await a.post(f"{API}/auth/logout", headers=bearer(pair["access_token"]))

        assert logout.status_code == 204
        after = await me(b, pair)
        assert after.status_code == 401, after.text
        assert after.json()["code"] == "invalid_token"
        assert (await refresh(b, pair)).status_code == 401

    async def test_reuse_detected_on_one_ends_the_session_on_the_other(
        self, clients: list[httpx.AsyncClient]
    ) -> None:
        a, b = clients
        _, first = await signed_up(a)
        rotated = await refresh(b, first)
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()
        assert (await me(a, second)).status_code == 200

        reused = await refresh(a, first)

        assert reused.status_code == 401
        assert reused.json()["code"] == "token_reused"
        assert (await me(b, second)).status_code == 401

    async def test_password_change_on_one_ends_other_sessions_on_the_other(
        self, clients: list[httpx.AsyncClient]
    ) -> None:
        a, b = clients
        email, on_a = await signed_up(a)
        on_b = (
            await b.post(f"{API}/auth/login", json={"email": email, "password": PASSWORD})
        ).json()

        changed = await a.post(
            f"{API}/auth/password/change",
            json={"current_password": PASSWORD, "new_password": "quiet-lantern-meadow-77"},
            headers=bearer(on_a["access_token"]),
        )

        assert changed.status_code == 204, changed.text
        assert (await me(b, on_b)).status_code == 401
        assert (await me(b, on_a)).status_code == 200

    async def test_tokens_of_either_verify_on_both(self, clients: list[httpx.AsyncClient]) -> None:
        a, b = clients
        _, on_a = await signed_up(a)
        _, on_b = await signed_up(b)

        jwks_a = (await a.get("/.well-known/jwks.json")).json()
        jwks_b = (await b.get("/.well-known/jwks.json")).json()

        assert jwks_a == jwks_b
        for client in (a, b):
            for pair in (on_a, on_b):
                assert (await me(client, pair)).status_code == 200
