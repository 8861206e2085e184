"""CORS for browser apps on other origins: answered preflights that need no token and
spend no rate limit, credentials for the listed origins only, refusals as problems, and
no CORS headers at all when no origin is configured."""

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from aixiate_core.errors import PROBLEM_CONTENT_TYPE
from aixiate_core.ratelimit import global_rate_limit
from aixiate_core.security import CurrentPrincipal
from aixiate_core.settings import Settings
from aixiate_core.testing import assert_problem, serve
from fastapi import APIRouter, Depends, FastAPI
from pydantic import ValidationError

type AppFactory = Callable[..., FastAPI]

APP = "https://app.example.com"
LOCAL = "http://localhost:3000"
EVIL = "https://app.example.com.evil.test"


def routes() -> APIRouter:
    router = APIRouter(dependencies=[Depends(global_rate_limit)])

    @router.post("/things")
    async def things() -> dict[str, bool]:
        return {"ok": True}

    @router.get("/private")
    async def private(principal: CurrentPrincipal) -> dict[str, str]:
        return {"user": str(principal.user_id)}

    return router


def preflight(origin: str, method: str = "POST", headers: str = "content-type") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


@pytest.fixture
async def api(make_app: AppFactory, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={
            "cors_origins": (APP, LOCAL),
            "rate_limit_enabled": True,
            "rate_limit_global": "2/minute",
        }
    )
    async with serve(make_app(configured, routes())) as http:
        yield http


class TestPreflight:
    async def test_an_allowed_origin_may_send_credentials_and_the_csrf_header(
        self, api: httpx.AsyncClient
    ) -> None:
        response = await api.options(
            "/things", headers=preflight(APP, headers="content-type, x-csrf-token")
        )

        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == APP
        assert response.headers["access-control-allow-credentials"] == "true"
        assert "X-CSRF-Token" in response.headers["access-control-allow-headers"]
        assert "Origin" in response.headers["vary"]
        assert response.headers["x-request-id"]

    async def test_needs_no_token_and_spends_no_rate_limit(self, api: httpx.AsyncClient) -> None:
        answers = [
            await api.options("/private", headers=preflight(LOCAL, "GET", "authorization"))
            for _ in range(10)
        ]

        assert [a.status_code for a in answers] == [200] * 10

    async def test_a_foreign_origin_is_refused_with_a_problem(self, api: httpx.AsyncClient) -> None:
        response = await api.options("/things", headers=preflight(EVIL))

        body = assert_problem(response, 403, "cors_refused")
        assert "origin" in body["detail"]
        assert "access-control-allow-origin" not in response.headers
        assert response.headers["vary"] == "Origin"

    async def test_an_unlisted_header_is_refused(self, api: httpx.AsyncClient) -> None:
        response = await api.options("/things", headers=preflight(APP, headers="x-evil"))

        assert_problem(response, 403, "cors_refused")


class TestSimpleRequests:
    async def test_an_allowed_origin_gets_its_origin_back_and_the_exposed_headers(
        self, api: httpx.AsyncClient
    ) -> None:
        response = await api.post("/things", headers={"Origin": APP})

        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == APP
        assert response.headers["access-control-allow-credentials"] == "true"
        exposed = response.headers["access-control-expose-headers"]
        assert "X-CSRF-Token" in exposed
        assert "X-Request-ID" in exposed
        assert "Origin" in response.headers["vary"]

    async def test_a_foreign_origin_gets_no_allow_origin(self, api: httpx.AsyncClient) -> None:
        response = await api.post("/things", headers={"Origin": EVIL})

        assert "access-control-allow-origin" not in response.headers
        assert "Origin" in response.headers["vary"]

    async def test_errors_carry_cors_headers_so_the_app_can_read_them(
        self, api: httpx.AsyncClient
    ) -> None:
        response = await api.get("/private", headers={"Origin": APP})

        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert response.headers["access-control-allow-origin"] == APP


class TestUnconfigured:
    async def test_no_cors_headers_without_origins(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        async with serve(make_app(settings, routes())) as http:
            response = await http.post("/things", headers={"Origin": APP})
            probe = await http.options("/things", headers=preflight(APP))

        assert not any(name.startswith("access-control-") for name in response.headers)
        assert not any(name.startswith("access-control-") for name in probe.headers)


class TestSetting:
    def test_reads_a_comma_separated_list(self) -> None:
        parsed = Settings(_env_file=None, cors_origins=f" {APP}, {LOCAL} ,")

        assert parsed.cors_origins == (APP, LOCAL)
        assert parsed.browser_origins == {APP, LOCAL, "http://localhost:3000"}

    @pytest.mark.parametrize(
        "value",
        [
            "*",
            "https://app.example.com/",
            "https://app.example.com/app",
            "app.example.com",
            "HTTPS://APP.EXAMPLE.COM",
            "https://app.example.com:443",
            "ftp://files.example.com",
        ],
    )
    def test_refuses_what_is_not_exactly_an_origin(self, value: str) -> None:
        with pytest.raises(ValidationError, match="not an origin"):
            Settings(_env_file=None, cors_origins=value)
