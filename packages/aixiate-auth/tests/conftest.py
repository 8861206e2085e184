"""Apps assembled from core's pieces and the auth routers, wired as the service wires them.

aixiate_api is off limits to package tests, so this mirrors its ``create_app``: the
lifespan resources, error handlers, request middleware, domain events and the password
service. ``app`` has the auth router alone (registration needs nothing more);
``auth_app`` also starts an :class:`AuthRuntime`, the principal resolver, the users
router and the JWKS, for login, tokens, sessions and recovery. Argon2 runs with cheap
parameters here; one test keeps the defaults.
"""

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from aixiate_audit import service as audit_service
from aixiate_auth import emails as auth_emails
from aixiate_auth import subscribers
from aixiate_auth.passwords import Argon2PasswordService
from aixiate_auth.router import jwks_router
from aixiate_auth.router import router as auth_router
from aixiate_auth.runtime import AuthRuntime
from aixiate_auth.settings import AuthSettings, get_auth_settings
from aixiate_core.db import create_sessionmaker
from aixiate_core.email import EmailMessage
from aixiate_core.email_templates import EmailTemplates
from aixiate_core.errors import install_error_handlers
from aixiate_core.events import DomainEvents, EmailDeliveryFailed
from aixiate_core.metrics import Metrics
from aixiate_core.middleware import RequestMiddleware
from aixiate_core.outbox import Outbox, OutboxEmail
from aixiate_core.resources import State, open_resources, running_background
from aixiate_core.security import register_password_service, register_principal_resolver
from aixiate_core.settings import Settings
from aixiate_core.store import KeyValueStore
from aixiate_core.testing import scratch_database, serve
from aixiate_users import emails as users_emails
from aixiate_users.models import User
from aixiate_users.router import router as users_router
from aixiate_users.testing import create_user
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

API_PREFIX = "/api/v1"
EMAILS = EmailTemplates(users_emails.EMAILS, auth_emails.EMAILS)
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
        async with (
            open_resources(settings, emails=EMAILS) as state,
            running_background(state, events, {}),
        ):
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


# --- the app with the auth runtime: login, tokens, sessions, recovery ---------------------

type AuthAppFactory = Callable[..., FastAPI]
type UserFactory = Callable[..., Awaitable[User]]
type Login = Callable[..., Awaitable[dict[str, Any]]]


def build_auth_app(
    settings: Settings, auth_settings: AuthSettings, *, store: KeyValueStore | None = None
) -> FastAPI:
    """``create_app`` without the service package. ``store`` replaces the store the
    lifespan opens, so several apps can share one in-process store as replicas share
    Redis (and the test can look into it)."""
    runtime = AuthRuntime(auth_settings)
    events = DomainEvents()
    events.subscribe(EmailDeliveryFailed, audit_service.on_email_delivery_failed)
    subscribers.subscribe(events, runtime)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        async with open_resources(settings, emails=EMAILS) as state:
            if store is not None:
                state["store"] = store
            await runtime.start(state)
            try:
                async with running_background(state, events, {}):
                    yield state
            finally:
                runtime.close()

    app = FastAPI(lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.events = events
    app.state.auth = runtime
    register_principal_resolver(app, runtime)
    register_password_service(app, runtime.passwords)
    app.dependency_overrides[get_auth_settings] = lambda: auth_settings
    install_error_handlers(app)
    app.add_middleware(
        RequestMiddleware,
        metrics=app.state.metrics,
        max_body_bytes=settings.max_body_bytes,
        trusted_proxies=settings.trusted_proxies,
    )
    app.include_router(jwks_router)
    app.include_router(auth_router, prefix=API_PREFIX)
    app.include_router(users_router, prefix=API_PREFIX)
    return app


@pytest.fixture
def make_auth_app(store: KeyValueStore) -> AuthAppFactory:
    """``(settings, auth_settings) -> app``; every app made shares the test's store
    unless given another ``store``."""

    def make(
        settings: Settings, auth_settings: AuthSettings, *, store: KeyValueStore = store
    ) -> FastAPI:
        return build_auth_app(settings, auth_settings, store=store)

    return make


@pytest.fixture
def auth_app(
    make_auth_app: AuthAppFactory, app_settings: Settings, auth_settings: AuthSettings
) -> FastAPI:
    return make_auth_app(app_settings, auth_settings)


@pytest.fixture
async def api(auth_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running ``auth_app``."""
    async with serve(auth_app) as http:
        yield http


@pytest.fixture
def runtime(auth_app: FastAPI, api: httpx.AsyncClient) -> AuthRuntime:
    """The started runtime of ``auth_app``."""
    started: AuthRuntime = auth_app.state.auth
    return started


@pytest.fixture
def db(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions of the test's own, on the app's database, to arrange and inspect rows."""
    return create_sessionmaker(engine)


@pytest.fixture
def make_user(
    db: async_sessionmaker[AsyncSession], passwords: Argon2PasswordService
) -> UserFactory:
    """A committed, verified, active user whose password is ``password``; keyword
    arguments set any column (``password_hash`` wins over ``password``)."""

    async def make(*, password: str = STRONG_PASSWORD, **overrides: Any) -> User:
        if "password_hash" not in overrides:
            overrides["password_hash"] = await passwords.hash(password)
        async with db() as session, session.begin():
            return await create_user(session, **overrides)

    return make


@pytest.fixture
def login(api: httpx.AsyncClient) -> Login:
    """Logs in through ``POST /auth/login``; the TokenPair as JSON."""

    async def do(email: str, password: str = STRONG_PASSWORD) -> dict[str, Any]:
        response = await api.post(
            f"{API_PREFIX}/auth/login", json={"email": email, "password": password}
        )
        assert response.status_code == 200, response.text
        pair: dict[str, Any] = response.json()
        return pair

    return do


@pytest.fixture
async def own_settings(app_settings: Settings, tmp_path: Path) -> AsyncIterator[Settings]:
    """``app_settings`` on a database of the test's own, with the schema and no rows, for
    tests that need an empty table (the first signing key) or rewrite shared ones."""
    async with scratch_database(tmp_path, "aixiate_own") as url:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(SQLModel.metadata.create_all)
            await engine.dispose()
            yield app_settings.model_copy(update={"database_url": url})
        finally:
            await engine.dispose()
