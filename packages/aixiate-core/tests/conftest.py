"""Apps assembled from core's pieces alone, the way the service assembles them.

Core must not import aixiate_api: ``make_app`` is :func:`aixiate_core.app.assemble` with
the operations router, plus whatever routes and lifespan extensions a test adds.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from aixiate_core.app import Extension, assemble
from aixiate_core.health import router as operations_router
from aixiate_core.settings import Settings
from fastapi import APIRouter, FastAPI

type AppFactory = Callable[..., FastAPI]


def build_app(settings: Settings, routes: APIRouter, *extensions: Extension) -> FastAPI:
    app = assemble(settings, extensions=extensions, background=False)
    app.include_router(operations_router)
    app.include_router(routes)
    return app


@pytest.fixture
def make_app() -> AppFactory:
    """``make_app(settings, routes, *extensions)``."""
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
