"""An app assembled from core's pieces and the auth router, wired as the service wires it.

aixiate_api is off limits to package tests, so this mirrors its ``create_app``: the
lifespan resources, error handlers, request middleware, domain events and the password
service. Argon2 runs with cheap parameters here; one test keeps the defaults.
"""

import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from uuid import uuid4

import httpx
import pytest
from aixiate_auth.passwords import Argon2PasswordService
from aixiate_auth.router import router as auth_router
from aixiate_auth.settings import AuthSettings, get_auth_settings
from aixiate_core.db import create_sessionmaker
from aixiate_core.email import EmailMessage
from aixiate_core.errors import install_error_handlers
from aixiate_core.events import DomainEvents
from aixiate_core.metrics import Metrics
from aixiate_core.middleware import RequestMiddleware
from aixiate_core.outbox import Outbox, OutboxEmail
from aixiate_core.resources import State, open_resources, running_background
from aixiate_core.security import register_password_service
from aixiate_core.settings import Settings
from aixiate_core.testing import serve
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

API_PREFIX = "/api/v1"
STRONG_PASSWORD = "vivid-otter-harbour-42"


def fast_auth_settings(**overrides: object) -> AuthSettings:
    values: dict[str, object] = {
        "argon2_memory_kib": 1024,
        "argon2_time_cost": 1,
        "password_hash_workers": 4,
    }
    return AuthSettings(_env_file=None, **(values | overrides))  # type: ignore[arg-type]


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid4().hex[:12]}@example.com"


type AuthSettingsFactory = Callable[..., AuthSettings]
type EmailFactory = Callable[..., str]


@pytest.fixture
def make_auth_settings() -> AuthSettingsFactory:
    """Cheap argon2 parameters plus the given overrides."""
    return fast_auth_settings


@pytest.fixture
def new_email() -> EmailFactory:
    """A fresh address per call: HTTP tests commit, so addresses must not repeat."""
    return unique_email


@pytest.fixture
def auth_settings() -> AuthSettings:
    return fast_auth_settings()


@pytest.fixture
def passwords(auth_settings: AuthSettings) -> Iterator[Argon2PasswordService]:
    service = Argon2PasswordService(auth_settings)
    yield service
    service.shutdown()


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    # A fixed secret, so the test's Outbox opens what the app's Outbox sealed; the
    # dispatcher is off so queued messages stay readable (one test turns it on).
    return settings.model_copy(
        update={
            "secret_key": SecretStr("test-secret-" + "x" * 40),
            "outbox_dispatcher_enabled": False,
        }
    )


def build_app(
    settings: Settings, auth_settings: AuthSettings, passwords: Argon2PasswordService
) -> FastAPI:
    events = DomainEvents()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        async with open_resources(settings) as state, running_background(state, events, {}):
            yield state

    app = FastAPI(lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.events = events
    register_password_service(app, passwords)
    app.dependency_overrides[get_auth_settings] = lambda: auth_settings
    install_error_handlers(app)
    app.add_middleware(
        RequestMiddleware,
        metrics=app.state.metrics,
        max_body_bytes=settings.max_body_bytes,
        trusted_proxies=settings.trusted_proxies,
    )
    app.include_router(auth_router, prefix=API_PREFIX)
    return app


@pytest.fixture
def make_app() -> Callable[[Settings, AuthSettings, Argon2PasswordService], FastAPI]:
    return build_app


@pytest.fixture
def app(
    app_settings: Settings, auth_settings: AuthSettings, passwords: Argon2PasswordService
) -> FastAPI:
    return build_app(app_settings, auth_settings, passwords)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(app) as http:
        yield http


@dataclass(frozen=True, slots=True)
class Mail:
    template: str
    message: EmailMessage

    @property
    def token(self) -> str:
        match = re.search(r"[?&]token=([A-Za-z0-9_\-]+)", self.message.text)
        assert match, "no token link in the message"
        return match.group(1)


class Mailbox:
    """Reads the app's outbox: the queued messages to one address, oldest first."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.outbox = Outbox(settings)
        self.sessionmaker = create_sessionmaker(engine)

    async def to(self, address: str, template: str | None = None) -> list[Mail]:
        async with self.sessionmaker() as session:
            rows = (
                await session.exec(
                    select(OutboxEmail)
                    .where(col(OutboxEmail.payload).is_not(None))
                    .order_by(col(OutboxEmail.created_at))
                )
            ).all()
        mails = [Mail(row.template, self.outbox.open(row)) for row in rows]
        return [
            mail
            for mail in mails
            if mail.message.to == address and (template is None or mail.template == template)
        ]

    async def last(self, address: str, template: str) -> Mail:
        mails = await self.to(address, template)
        assert mails, f"no {template} email to {address}"
        return mails[-1]


@pytest.fixture
def mailbox(engine: AsyncEngine, app_settings: Settings) -> Mailbox:
    return Mailbox(engine, app_settings)
