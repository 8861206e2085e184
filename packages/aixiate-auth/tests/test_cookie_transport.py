"""Cookie transport: the refresh token in an HttpOnly ``__Host-`` cookie, refreshed and
ended only with the CSRF proof from an allowed origin, rotating and detecting reuse
exactly as in body mode.

The test client speaks plain http, where no client sends ``Secure`` cookies back, so
the tests read ``Set-Cookie`` themselves and send ``Cookie`` headers as a browser would.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from aixiate_auth.settings import AuthSettings
from aixiate_auth.testing import AuthAppFactory, UserFactory, session_id_of
from aixiate_core.settings import Settings
from aixiate_core.testing import FakeClock, assert_problem, bearer, serve
from aixiate_users.testing import PASSWORD

API = "/api/v1"
LOGIN = f"{API}/auth/login?transport=cookie"
REFRESH = f"{API}/auth/refresh?transport=cookie"
LOGOUT = f"{API}/auth/logout?transport=cookie"
ME = f"{API}/users/me"
REFRESH_COOKIE = "__Host-aixiate_refresh"
CSRF_COOKIE = "__Host-aixiate_csrf"
SPA = "http://localhost:3000"
ALSO_ALLOWED = "https://app.example.com"


@dataclass
class Jar:
    """The two cookies as the browser holds them, and the attributes they came with."""

    refresh: str
    csrf: str
    attributes: dict[str, dict[str, str]]

    @classmethod
    def of(cls, response: httpx.Response) -> "Jar":
        attributes: dict[str, dict[str, str]] = {}
        values: dict[str, str] = {}
        for header in response.headers.get_list("set-cookie"):
            cookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                values[name] = morsel.value
                attributes[name] = {
                    key: str(value) for key, value in morsel.items() if value not in ("", False)
                }
                attributes[name]["raw"] = header
        return cls(values[REFRESH_COOKIE], values[CSRF_COOKIE], attributes)

    def cookie_header(self, csrf: str | None = None) -> str:
        return f"{REFRESH_COOKIE}={self.refresh}; {CSRF_COOKIE}={csrf or self.csrf}"

    def headers(self, *, origin: str | None = SPA, csrf: str | None = None) -> dict[str, str]:
        headers = {"Cookie": self.cookie_header(), "X-CSRF-Token": csrf or self.csrf}
        if origin is not None:
            headers["Origin"] = origin
        return headers


@pytest.fixture
async def api(
    make_auth_app: AuthAppFactory, app_settings: Settings, auth_settings: AuthSettings
) -> AsyncIterator[httpx.AsyncClient]:
    settings = app_settings.model_copy(update={"cors_origins": (SPA, ALSO_ALLOWED)})
    async with serve(make_auth_app(settings, auth_settings)) as http:
        yield http


async def cookie_login(api: httpx.AsyncClient, email: str) -> tuple[dict[str, Any], Jar]:
    response = await api.post(
        LOGIN, json={"email": email, "password": PASSWORD}, headers={"Origin": SPA}
    )
    assert response.status_code == 200, response.text
    return response.json(), Jar.of(response)


class TestIssuing:
    async def test_the_refresh_token_goes_into_an_httponly_host_cookie(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        response = await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})

        assert response.status_code == 200, response.text
        pair = response.json()
        assert pair["refresh_token"] is None
        assert pair["access_token"]
        assert response.headers["cache-control"] == "no-store"
        jar = Jar.of(response)
        refresh = jar.attributes[REFRESH_COOKIE]
        assert refresh["httponly"] == "True"
        assert refresh["secure"] == "True"
        assert refresh["samesite"].lower() == "strict"
        assert refresh["path"] == "/"
        assert "domain" not in refresh
        assert int(refresh["max-age"]) == pair["refresh_expires_in"]
        csrf = jar.attributes[CSRF_COOKIE]
        assert "httponly" not in csrf  # the app's scripts read it
        assert csrf["secure"] == "True"
        assert csrf["samesite"].lower() == "strict"
        assert "domain" not in csrf
        assert response.headers["x-csrf-token"] == jar.csrf
        assert (await api.get(ME, headers=bearer(pair["access_token"]))).status_code == 200

    async def test_body_mode_is_unchanged_and_sets_no_cookie(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()

        response = await api.post(
            f"{API}/auth/login", json={"email": user.email, "password": PASSWORD}
        )

        assert response.json()["refresh_token"]
        assert "set-cookie" not in response.headers

    async def test_an_unknown_transport_is_a_validation_error(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()

        response = await api.post(
            f"{API}/auth/login?transport=url", json={"email": user.email, "password": PASSWORD}
        )

        assert_problem(response, 422, "validation_error")


class TestRefresh:
    async def test_rotates_the_cookie_and_the_csrf_token(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        _, jar = await cookie_login(api, user.email)

        response = await api.post(REFRESH, headers=jar.headers())

        assert response.status_code == 200, response.text
        assert response.json()["refresh_token"] is None
        rotated = Jar.of(response)
        assert rotated.refresh != jar.refresh
        assert rotated.csrf != jar.csrf
        again = await api.post(REFRESH, headers=rotated.headers())
        assert again.status_code == 200, again.text

    async def test_a_rotated_cookie_presented_again_ends_the_session(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        _, jar = await cookie_login(api, user.email)
        fresh = (await api.post(REFRESH, headers=jar.headers())).json()

        reused = await api.post(REFRESH, headers=jar.headers())

        assert_problem(reused, 401, "token_reused")
        assert_problem(
            await api.get(ME, headers=bearer(fresh["access_token"])), 401, "invalid_token"
        )

    @pytest.mark.parametrize("origin", [SPA, ALSO_ALLOWED, "http://localhost:3000", None])
    async def test_allowed_origins_and_no_origin_pass(
        self, api: httpx.AsyncClient, make_user: UserFactory, origin: str | None
    ) -> None:
        user = await make_user()
        _, jar = await cookie_login(api, user.email)

        response = await api.post(REFRESH, headers=jar.headers(origin=origin))

        assert response.status_code == 200, response.text

    @pytest.mark.parametrize(
        "origin",
        [
            "https://evil.example",
            "http://localhost:3001",
            "https://app.example.com.evil.test",
            "http://app.example.com",
            "null",
        ],
    )
    async def test_a_foreign_origin_fails_the_csrf_check(
        self, api: httpx.AsyncClient, make_user: UserFactory, origin: str
    ) -> None:
        user = await make_user()
        _, jar = await cookie_login(api, user.email)

        response = await api.post(REFRESH, headers=jar.headers(origin=origin))

        assert_problem(response, 403, "csrf_failed")
        # Nothing was rotated: the cookie still works from the right origin.
        assert (await api.post(REFRESH, headers=jar.headers())).status_code == 200

    async def test_without_the_header_it_fails(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        _, jar = await cookie_login(api, user.email)

        response = await api.post(REFRESH, headers={"Cookie": jar.cookie_header(), "Origin": SPA})

        assert_problem(response, 403, "csrf_failed")

    async def test_a_header_that_differs_from_the_cookie_fails(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        _, jar = await cookie_login(api, user.email)

        response = await api.post(REFRESH, headers=jar.headers(csrf="0" * 32))

        assert_problem(response, 403, "csrf_failed")

    async def test_a_csrf_token_of_another_session_fails(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        # An attacker with a session of their own plants their CSRF value (cookie and
        # header agree) next to the victim's refresh cookie.
        victim, attacker = await make_user(), await make_user()
        _, victim_jar = await cookie_login(api, victim.email)
        _, attacker_jar = await cookie_login(api, attacker.email)
        planted = {
            "Cookie": victim_jar.cookie_header(csrf=attacker_jar.csrf),
            "X-CSRF-Token": attacker_jar.csrf,
            "Origin": SPA,
        }

        response = await api.post(REFRESH, headers=planted)

        assert_problem(response, 403, "csrf_failed")

    async def test_without_the_cookie_it_is_an_invalid_token(self, api: httpx.AsyncClient) -> None:
        response = await api.post(REFRESH, headers={"X-CSRF-Token": "x", "Origin": SPA})

        assert_problem(response, 401, "invalid_token")

    async def test_body_mode_still_needs_its_body(self, api: httpx.AsyncClient) -> None:
        response = await api.post(f"{API}/auth/refresh")

        body = assert_problem(response, 422, "validation_error")
        assert body["errors"][0]["loc"] == ["body"]


class TestLogout:
    async def test_ends_the_session_and_clears_both_cookies(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        pair, jar = await cookie_login(api, user.email)

        response = await api.post(LOGOUT, headers=jar.headers())

        assert response.status_code == 204, response.text
        cleared = {
            name: header
            for header in response.headers.get_list("set-cookie")
            for name in (REFRESH_COOKIE, CSRF_COOKIE)
            if header.startswith(f"{name}=")
        }
        assert set(cleared) == {REFRESH_COOKIE, CSRF_COOKIE}
        assert all("Max-Age=0" in header for header in cleared.values())
        assert all("Secure" in header for header in cleared.values())
        assert_problem(
            await api.get(ME, headers=bearer(pair["access_token"])), 401, "invalid_token"
        )
        assert_problem(await api.post(REFRESH, headers=jar.headers()), 401, "invalid_token")

    async def test_needs_the_csrf_proof(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        pair, jar = await cookie_login(api, user.email)

        forged = await api.post(
            LOGOUT, headers={"Cookie": jar.cookie_header(), "Origin": "https://evil.example"}
        )

        assert_problem(forged, 403, "csrf_failed")
        assert (await api.get(ME, headers=bearer(pair["access_token"]))).status_code == 200

    async def test_without_a_cookie_there_is_nothing_to_end(self, api: httpx.AsyncClient) -> None:
        response = await api.post(LOGOUT, headers={"Origin": SPA})

        assert response.status_code == 204

    async def test_bearer_logout_still_needs_a_token(self, api: httpx.AsyncClient) -> None:
        response = await api.post(f"{API}/auth/logout")

        assert_problem(response, 401, "not_authenticated")


class TestMfaLogin:
    async def test_the_second_step_sets_the_cookies_too(
        self,
        api: httpx.AsyncClient,
        make_user: UserFactory,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        import pyotp
        from aixiate_auth.services import mfa as mfa_service_module

        clock = FakeClock(float(int(FakeClock().now) // 30 * 30))
        monkeypatch.setattr(mfa_service_module, "time", clock)
        user = await make_user()
        token = (await cookie_login(api, user.email))[0]["access_token"]
        secret = (await api.post(f"{API}/auth/mfa/totp/setup", headers=bearer(token))).json()[
            "secret"
        ]
        confirm = await api.post(
            f"{API}/auth/mfa/totp/confirm",
            json={"code": pyotp.TOTP(secret).at(clock.now)},
            headers=bearer(token),
        )
        assert confirm.status_code == 200, confirm.text
        challenge = (await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})).json()
        assert "set-cookie" not in challenge

        response = await api.post(
            f"{API}/auth/login/mfa?transport=cookie",
            json={
                "mfa_token": challenge["mfa_token"],
                "code": pyotp.TOTP(secret).at(clock.now + 30),
            },
        )

        assert response.status_code == 200, response.text
        assert response.json()["refresh_token"] is None
        jar = Jar.of(response)
        refreshed = await api.post(REFRESH, headers=jar.headers())
        assert refreshed.status_code == 200, refreshed.text
        assert session_id_of(refreshed.json()["access_token"]) == session_id_of(
            response.json()["access_token"]
        )
