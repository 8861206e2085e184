import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from aixiate_core.errors import PROBLEM_CONTENT_TYPE
from aixiate_core.settings import Settings
from aixiate_core.testing import postgres_server_url, proxied, redis_server_url, serve
from fastapi import APIRouter, FastAPI

type AppFactory = Callable[[Settings, APIRouter], FastAPI]

# The readiness check promises a 503 within about the health timeout (1.5 s); the bound is loose on
# purpose so that a slow CI machine does not fail the test, only a hang does.
GENEROUS_SECONDS = 5.0


def item_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return router


class FakeRedis:
    """Just enough of the Redis protocol for a readiness probe: PING, and OK to the rest.

    Stands in when the run has no Redis server, so the outage test still runs.
    """

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while (header := await reader.readline()).startswith(b"*"):
                words = []
                for _ in range(int(header[1:])):
                    size = int((await reader.readline())[1:])
                    words.append((await reader.readexactly(size + 2))[:-2])
                writer.write(b"+PONG\r\n" if words[0].upper() == b"PING" else b"+OK\r\n")
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def redis_target() -> AsyncIterator[str]:
    """The run's Redis URL, or a fake Redis server's when the run has none."""
    if (url := redis_server_url()) is not None:
        yield url
        return
    fake = FakeRedis()
    await fake.start()
    try:
        yield f"redis://127.0.0.1:{fake.port}/0"
    finally:
        await fake.stop()


async def timed_get(client: httpx.AsyncClient, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.get(path)
    return response, time.monotonic() - started


class TestLive:
    async def test_answers_ok(self, make_app: AppFactory, settings: Settings) -> None:
        async with serve(make_app(settings, APIRouter())) as client:
            response = await client.get("/health/live")

        assert response.status_code == 200
        assert response.json()["status"] == "ok"

    async def test_checks_no_backend(self, make_app: AppFactory, database_down: Settings) -> None:
        async with serve(make_app(database_down, APIRouter())) as client:
            response = await client.get("/health/live")

        assert response.status_code == 200


class TestReady:
    async def test_ready_when_backends_answer(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        async with serve(make_app(settings, APIRouter())) as client:
            response = await client.get("/health/ready")

        assert response.status_code == 200
        expected = {"database": "ok"}
        if settings.redis_url:
            expected["redis"] = "ok"
        assert response.json() == {"status": "ok", "checks": expected}

    async def test_unreachable_database_is_503(
        self, make_app: AppFactory, database_down: Settings
    ) -> None:
        async with serve(make_app(database_down, APIRouter())) as client:
            response, elapsed = await timed_get(client, "/health/ready")

        assert response.status_code == 503
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert response.headers["retry-after"] == "5"
        body = response.json()
        assert body["code"] == "not_ready"
        assert body["checks"]["database"] == "error"
        assert body["request_id"] == response.headers["x-request-id"]
        assert elapsed < GENEROUS_SECONDS

    async def test_hung_database_is_503_within_the_health_timeout(
        self, make_app: AppFactory, database_hung: Settings
    ) -> None:
        # The connection attempt alone would wait 5 s; the probe gives up at 1.5 s.
        hung = database_hung.model_copy(
            update={"database_connect_timeout_seconds": 5.0, "health_timeout_seconds": 1.5}
        )

        async with serve(make_app(hung, APIRouter())) as client:
            response, elapsed = await timed_get(client, "/health/ready")

        assert response.status_code == 503
        assert response.json()["checks"]["database"] == "timeout"
        assert elapsed < GENEROUS_SECONDS

    @pytest.mark.skipif(
        postgres_server_url() is None,
        reason="cutting the database needs a network database; "
        "set AIXIATE_TEST_DATABASE_URL to a PostgreSQL server",
    )
    async def test_follows_a_database_outage(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        async with proxied(settings.database_url, 5432) as (proxy, url):
            through = settings.model_copy(update={"database_url": url})
            async with serve(make_app(through, APIRouter())) as client:
                assert (await client.get("/health/ready")).status_code == 200

                await proxy.stop()
                cut, elapsed = await timed_get(client, "/health/ready")

                await proxy.start()
                back = await client.get("/health/ready")

        assert cut.status_code == 503
        assert cut.json()["checks"]["database"] != "ok"
        assert elapsed < GENEROUS_SECONDS
        assert back.status_code == 200
        assert back.json()["checks"]["database"] == "ok"

    async def test_follows_a_redis_outage(self, make_app: AppFactory, settings: Settings) -> None:
        async with redis_target() as redis_url, proxied(redis_url, 6379) as (proxy, url):
            through = settings.model_copy(update={"redis_url": url})
            async with serve(make_app(through, APIRouter())) as client:
                up = await client.get("/health/ready")

                await proxy.stop()
                cut, elapsed = await timed_get(client, "/health/ready")

                await proxy.start()
                back = await client.get("/health/ready")

        assert up.status_code == 200
        assert up.json()["checks"] == {"database": "ok", "redis": "ok"}
        assert cut.status_code == 503
        assert cut.json()["checks"]["redis"] != "ok"
        assert cut.json()["checks"]["database"] == "ok"
        assert elapsed < GENEROUS_SECONDS
        assert back.status_code == 200
        assert back.json()["checks"]["redis"] == "ok"


class TestMetrics:
    async def test_counts_requests_by_route_template(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        async with serve(make_app(settings, item_routes())) as client:
            await client.get("/items/41")
            await client.get("/items/42")
            await client.get("/items/not-a-number")
            response = await client.get("/metrics")

        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert (
            'aixiate_http_requests_total{method="GET",route="/items/{item_id}",status="200"} 2.0'
            in text
        )
        assert (
            'aixiate_http_requests_total{method="GET",route="/items/{item_id}",status="422"} 1.0'
            in text
        )
        assert "/items/41" not in text
        assert "/items/42" not in text

    async def test_unmatched_paths_share_one_label(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        async with serve(make_app(settings, item_routes())) as client:
            for n in range(3):
                await client.get(f"/scan/{n}")
            text = (await client.get("/metrics")).text

        assert 'route="<unmatched>",status="404"} 3.0' in text
        assert "/scan/" not in text

    async def test_records_latency(self, make_app: AppFactory, settings: Settings) -> None:
        async with serve(make_app(settings, item_routes())) as client:
            await client.get("/items/1")
            text = (await client.get("/metrics")).text

        assert (
            'aixiate_http_request_duration_seconds_count{method="GET",'
            'route="/items/{item_id}",status="200"} 1.0' in text
        )

    async def test_each_app_has_its_own_registry(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        async with serve(make_app(settings, item_routes())) as first:
            await first.get("/items/1")
        async with serve(make_app(settings, item_routes())) as second:
            text = (await second.get("/metrics")).text

        assert 'route="/items/{item_id}"' not in text
