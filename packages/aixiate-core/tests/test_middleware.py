import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import structlog
from aixiate_core.context import current_request
from aixiate_core.errors import PROBLEM_CONTENT_TYPE
from aixiate_core.middleware import client_ip, parse_networks
from aixiate_core.settings import Settings
from aixiate_core.testing import serve
from fastapi import APIRouter, FastAPI

type AppFactory = Callable[[Settings, APIRouter], FastAPI]

LIMIT = 2048
PEER = "203.0.113.7"  # the address serve() connects from
SECRET_DETAIL = "kaboom: password=swordfish"


def middleware_routes() -> APIRouter:
    router = APIRouter()

    @router.post("/echo")
    async def echo(body: dict[str, Any]) -> dict[str, int]:
        return {"keys": len(body)}

    @router.get("/whoami")
    async def whoami() -> dict[str, str | None]:
        info = current_request()
        assert info is not None
        return {"request_id": info.request_id, "ip": info.ip, "user_agent": info.user_agent}

    @router.get("/boom")
    async def boom() -> None:
        raise LookupError(SECRET_DETAIL)

    return router


@pytest.fixture
async def client(make_app: AppFactory, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    limited = settings.model_copy(update={"max_body_bytes": LIMIT})
    async with serve(make_app(limited, middleware_routes())) as http:
        yield http


def json_of_size(size: int) -> bytes:
    prefix, suffix = b'{"pad": "', b'"}'
    return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix


class TestRequestId:
    async def test_echoes_a_sane_id(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/whoami", headers={"X-Request-ID": "req-42.a:b_c"})

        assert response.headers["x-request-id"] == "req-42.a:b_c"
        assert response.json()["request_id"] == "req-42.a:b_c"

    async def test_generates_one_when_absent(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/whoami")

        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
        assert response.json()["request_id"] == response.headers["x-request-id"]

    @pytest.mark.parametrize(
        "insane",
        [
            pytest.param("x" * 500, id="too-long"),
            pytest.param("two words", id="space"),
            pytest.param("line\nX-Injected: yes", id="newline"),
            pytest.param('"><script>', id="markup"),
        ],
    )
    async def test_replaces_an_insane_id(self, client: httpx.AsyncClient, insane: str) -> None:
        response = await client.get("/whoami", headers={"X-Request-ID": insane})

        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
        assert response.json()["request_id"] == response.headers["x-request-id"]
        assert "x-injected" not in response.headers

    async def test_error_body_carries_the_same_id(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/nowhere", headers={"X-Request-ID": "trace-1"})

        assert response.status_code == 404
        assert response.headers["x-request-id"] == "trace-1"
        assert response.json()["request_id"] == "trace-1"


class TestBodyLimit:
    async def test_declared_length_over_limit(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/echo", content=json_of_size(LIMIT + 1), headers={"content-type": "application/json"}
        )

        assert response.status_code == 413
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        body = response.json()
        assert body["code"] == "payload_too_large"
        assert str(LIMIT) in body["detail"]
        assert body["request_id"] == response.headers["x-request-id"]

    async def test_chunked_body_over_limit(self, client: httpx.AsyncClient) -> None:
        payload = json_of_size(LIMIT * 3)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(payload), 512):
                yield payload[start : start + 512]

        response = await client.post(
            "/echo", content=chunks(), headers={"content-type": "application/json"}
        )

        assert "content-length" not in response.request.headers
        assert response.status_code == 413
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert response.json()["code"] == "payload_too_large"

    async def test_body_at_limit_is_accepted(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/echo", content=json_of_size(LIMIT), headers={"content-type": "application/json"}
        )

        assert response.status_code == 200
        assert response.json() == {"keys": 1}

    async def test_chunked_body_under_limit_is_accepted(self, client: httpx.AsyncClient) -> None:
        payload = json_of_size(LIMIT // 2)

        async def chunks() -> AsyncIterator[bytes]:
            yield payload[:100]
            yield payload[100:]

        response = await client.post(
            "/echo", content=chunks(), headers={"content-type": "application/json"}
        )

        assert response.status_code == 200


class TestUnhandledError:
    async def test_becomes_a_500_problem(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/boom")

        assert response.status_code == 500
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        body = response.json()
        assert body["code"] == "internal_error"
        assert body["request_id"] == response.headers["x-request-id"]
        assert body["instance"] == "/boom"

    async def test_leaks_nothing_about_the_exception(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/boom")

        assert response.status_code == 500
        for leak in ("kaboom", "swordfish", "LookupError", "Traceback", "test_middleware"):
            assert leak not in response.text

    async def test_is_logged_with_the_traceback(self, client: httpx.AsyncClient) -> None:
        with structlog.testing.capture_logs() as logs:
            response = await client.get("/boom")

        errors = [entry for entry in logs if entry["event"] == "http.unhandled_error"]
        assert len(errors) == 1
        assert errors[0]["log_level"] == "error"
        assert errors[0]["exc_info"] is True
        assert response.status_code == 500


class TestAccessLog:
    async def test_one_line_per_request(self, client: httpx.AsyncClient) -> None:
        # merge_contextvars is what configure_logging runs first, and it is where the
        # middleware puts request_id, method and path.
        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs:
            response = await client.get("/whoami", headers={"X-Request-ID": "access-1"})

        lines = [entry for entry in logs if entry["event"] == "http.request"]
        assert len(lines) == 1
        line = lines[0]
        assert line["request_id"] == "access-1"
        assert line["method"] == "GET"
        assert line["path"] == "/whoami"
        assert line["route"] == "/whoami"
        assert line["status"] == response.status_code == 200
        assert isinstance(line["duration_ms"], float)
        assert line["duration_ms"] >= 0
        assert line["client_ip"] == PEER

    async def test_logs_failures_with_their_status(self, client: httpx.AsyncClient) -> None:
        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs:
            await client.get("/boom")
            await client.get("/nowhere")

        lines = [entry for entry in logs if entry["event"] == "http.request"]
        assert [(line["path"], line["route"], line["status"]) for line in lines] == [
            ("/boom", "/boom", 500),
            ("/nowhere", "<unmatched>", 404),
        ]

    async def test_request_context_ends_with_the_request(self, client: httpx.AsyncClient) -> None:
        await client.get("/whoami")

        assert current_request() is None
        assert "request_id" not in structlog.contextvars.get_contextvars()


class TestClientIp:
    @pytest.mark.parametrize(
        ("peer", "forwarded_for", "trusted", "expected"),
        [
            ("198.51.100.1", "192.0.2.9", (), "198.51.100.1"),
            ("198.51.100.1", "192.0.2.9", ("10.0.0.0/8",), "198.51.100.1"),
            ("10.0.0.1", "192.0.2.9", ("10.0.0.1",), "192.0.2.9"),
            # client -> (spoofs 6.6.6.6) -> edge proxy 10.0.0.2 -> inner proxy 10.0.0.1 -> us
            ("10.0.0.1", "6.6.6.6, 192.0.2.9, 10.0.0.2", ("10.0.0.0/24",), "192.0.2.9"),
            ("10.0.0.1", "10.0.0.3, 10.0.0.2", ("10.0.0.0/24",), "10.0.0.3"),
            ("10.0.0.1", None, ("10.0.0.0/24",), "10.0.0.1"),
            ("10.0.0.1", "192.0.2.9, not-an-ip", ("10.0.0.0/24",), "10.0.0.1"),
            ("10.0.0.1", "not-an-ip, 10.0.0.2", ("10.0.0.0/24",), "10.0.0.2"),
            ("10.0.0.1", "192.0.2.9:5555", ("10.0.0.0/24",), "10.0.0.1"),
            ("2001:db8::1", "2001:db8:ffff::9", ("2001:db8::/64",), "2001:db8:ffff::9"),
            (None, "192.0.2.9", ("10.0.0.0/24",), None),
        ],
        ids=[
            "peer_without_trusted_proxies",
            "spoofed_header_from_untrusted_peer_is_ignored",
            "trusted_proxy_is_believed",
            "chain_stops_at_first_untrusted_hop",
            "all_hops_trusted_gives_the_leftmost",
            "missing_header_gives_the_peer",
            "garbage_entry_is_not_believed",
            "garbage_beyond_trusted_hops_stops_at_last_good_hop",
            "entry_with_port_is_not_an_address",
            "ipv6",
            "no_peer",
        ],
    )
    def test_client_ip(
        self,
        peer: str | None,
        forwarded_for: str | None,
        trusted: tuple[str, ...],
        expected: str | None,
    ) -> None:
        assert client_ip(peer, forwarded_for, parse_networks(trusted)) == expected

    async def test_middleware_uses_trusted_proxies_setting(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        behind_proxy = settings.model_copy(update={"trusted_proxies": [f"{PEER}/32"]})

        async with serve(make_app(behind_proxy, middleware_routes())) as client:
            believed = await client.get("/whoami", headers={"X-Forwarded-For": "192.0.2.9"})

        assert believed.json()["ip"] == "192.0.2.9"

    async def test_middleware_ignores_header_without_trusted_proxies(
        self, client: httpx.AsyncClient
    ) -> None:
        spoofed = await client.get("/whoami", headers={"X-Forwarded-For": "192.0.2.9"})

        assert spoofed.json()["ip"] == PEER
