"""An app assembled from core's pieces alone, wired the way the service wires them.

Core must not import aixiate_api, so the tests build their own small app: the same
lifespan resources, error handlers, middleware and operations router, plus whatever
routes a test adds.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from aixiate_core.errors import install_error_handlers
from aixiate_core.health import router as operations_router
from aixiate_core.metrics import Metrics
from aixiate_core.middleware import RequestMiddleware
from aixiate_core.resources import State, open_resources
from aixiate_core.settings import Settings
from fastapi import APIRouter, FastAPI

type AppFactory = Callable[[Settings, APIRouter], FastAPI]


def build_app(settings: Settings, routes: APIRouter) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        async with open_resources(settings) as state:
            yield state

    app = FastAPI(lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.add_middleware(
        RequestMiddleware,
        metrics=app.state.metrics,
        max_body_bytes=settings.max_body_bytes,
        trusted_proxies=settings.trusted_proxies,
    )
    app.include_router(operations_router)
    app.include_router(routes)
    return app


@pytest.fixture
def make_app() -> AppFactory:
    return build_app


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word, like a hung database."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    yield port
    server.close()
    await server.wait_closed()
