"""Apps assembled from core's pieces alone, the way the service assembles them.

Core must not import aixiate_api: ``make_app`` is :func:`aixiate_core.app.assemble` with
the operations router, plus whatever routes and lifespan extensions a test adds. The
emails the packages send are theirs, so the outbox tests send stand-ins of core's own.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from aixiate_core.app import Extension, assemble
from aixiate_core.email_templates import EmailTemplates, EmailTemplateSet
from aixiate_core.health import router as operations_router
from aixiate_core.settings import Settings
from fastapi import APIRouter, FastAPI
from jinja2 import DictLoader

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


#: Two emails in the packages' shape: a link to follow, and a notice without one.
TEST_EMAILS = EmailTemplateSet(
    subjects={
        "verify_email": "Confirm your email address for {product_name}",
        "password_changed": "Your {product_name} password was changed",
    },
    loader=DictLoader(
        {
            "verify_email.txt.j2": (
                "Hello{% if name %} {{ name }}{% endif %},\n\n"
                "Confirm your address within {{ expires_hours }} hours:\n\n{{ link }}\n"
            ),
            "verify_email.html.j2": (
                '{% extends "_layout.html.j2" %}{% block body %}'
                '<p><a href="{{ link }}">Confirm your email address</a></p>{% endblock %}'
            ),
            "password_changed.txt.j2": "Your {{ product_name }} password was changed.\n",
            "password_changed.html.j2": (
                '{% extends "_layout.html.j2" %}{% block body %}'
                "<p>Your password was changed.</p>{% endblock %}"
            ),
        }
    ),
)


@pytest.fixture
def email_templates() -> EmailTemplates:
    return EmailTemplates(TEST_EMAILS)


@pytest.fixture
def database_down(settings: Settings, free_port: Callable[[], int]) -> Settings:
    """The test settings with a database where nothing listens: connecting fails at once,
    like a database that is down."""
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x"
    return settings.model_copy(update={"database_url": url})


@pytest.fixture
def database_hung(settings: Settings, silent_port: int) -> Settings:
    """The test settings with a database that accepts connections and never answers."""
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{silent_port}/x"
    return settings.model_copy(update={"database_url": url})


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
