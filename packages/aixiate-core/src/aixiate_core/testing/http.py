"""HTTP clients talking to an app in-process, with its lifespan running."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp

from aixiate_core.errors import PROBLEM_CONTENT_TYPE


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """Runs the app's lifespan and gives an HTTP client talking to it in-process."""
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, client=("203.0.113.7", 40000)),
            base_url="http://aixiate.test",
        ) as client,
    ):
        yield client


@asynccontextmanager
async def serve_from(app: ASGIApp, *peers: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Like :func:`serve`, with one client per address in ``peers``, all talking to one
    running app: clients behind different IPs, for tests of per-IP behaviour."""
    async with LifespanManager(app) as manager, AsyncExitStack() as stack:
        clients = []
        for peer in peers:
            transport = httpx.ASGITransport(app=manager.app, client=(peer, 40000))
            client = httpx.AsyncClient(transport=transport, base_url="http://aixiate.test")
            clients.append(await stack.enter_async_context(client))
        yield clients


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header of a bearer token."""
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Checks an RFC 9457 answer (status, media type, ``code``, the request id in body and
    header) and returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"]) == (status, code), body
    assert body["request_id"] == response.headers["x-request-id"]
    return body
