"""Apps assembled from core's pieces and the auth routers, as aixiate-api assembles them.

aixiate_api is off limits to package tests, so ``build_auth_app`` mirrors its
``create_app`` with :func:`aixiate_core.app.assemble`: the users and auth states built in
the lifespan, the auth routers, the users routers (``/users/me`` is where tokens are
used), the JWKS. The started :class:`AuthState` is also put on ``app.state.auth`` for the
tests to look into. Argon2 runs with cheap parameters here; one test keeps the defaults.
"""

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from aixiate_audit import service as audit_service
from aixiate_auth import emails as auth_emails
from aixiate_auth.oauth_router import identities_router, oauth_router
from aixiate_auth.router import admin_router, jwks_router
from aixiate_auth.router import router as auth_router
from aixiate_auth.settings import AuthSettings
from aixiate_auth.state import AuthState, auth_extension
from aixiate_auth.testing import (
    AuthAppFactory,
    AuthAppVariant,
    EmailFactory,
    Login,
    SignIn,
    UserFactory,
    expose_auth_state,
)
from aixiate_core.app import API_PREFIX, assemble, static_state
from aixiate_core.db import create_sessionmaker
from aixiate_core.email_templates import EmailTemplates
from aixiate_core.events import DomainEvents, EmailDeliveryFailed
from aixiate_core.settings import Settings
from aixiate_core.store import KeyValueStore
from aixiate_core.testing import Sessions, scratch_database, serve
from aixiate_core.testing.mail import Mailbox
from aixiate_users import emails as users_emails
from aixiate_users.models import User
from aixiate_users.passwords import Passwords
from aixiate_users.router import confirm_email_router
from aixiate_users.router import router as users_router
from aixiate_users.settings import UsersSettings
from aixiate_users.state import UsersState, users_extension
from aixiate_users.testing import (
    PASSWORD,
    create_user_with_password,
    fast_passwords,
    fast_users_settings,
)
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

EMAILS = EmailTemplates(users_emails.EMAILS, auth_emails.EMAILS)


def fast_auth_settings(**overrides: object) -> AuthSettings:
    return AuthSettings(_env_file=None, **overrides)  # type: ignore[arg-type]


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid4().hex[:12]}@example.com"


type AuthSettingsFactory = Callable[..., AuthSettings]


@pytest.fixture
def make_auth_settings() -> AuthSettingsFactory:
    """Settings without the environment's, plus the given overrides."""
    return fast_auth_settings


@pytest.fixture
def new_email() -> EmailFactory:
    """A fresh address per call: HTTP tests commit, so addresses must not repeat."""
    return unique_email


@pytest.fixture
def auth_settings() -> AuthSettings:
    return fast_auth_settings()


@pytest.fixture
def passwords() -> Iterator[Passwords]:
    """Cheap argon2 parameters (``fast_users_settings``)."""
    with fast_passwords() as service:
        yield service


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    """The dispatcher is off, so queued messages stay readable (one test turns it on); the
    run's one secret key lets the test's ``Mailbox`` open what the app sealed."""
    return settings.model_copy(update={"outbox_dispatcher_enabled": False})


def build_app(settings: Settings, auth_settings: AuthSettings, passwords: Passwords) -> FastAPI:
    """The auth app hashing with ``passwords`` (a test may count what it hashes)."""
    return build_auth_app(settings, auth_settings, passwords=passwords)


@pytest.fixture
def make_app() -> Callable[[Settings, AuthSettings, Passwords], FastAPI]:
    return build_app


@pytest.fixture
def app(app_settings: Settings, auth_settings: AuthSettings, passwords: Passwords) -> FastAPI:
    return build_app(app_settings, auth_settings, passwords)


@pytest.fixture
def mailbox(engine: AsyncEngine, app_settings: Settings) -> Mailbox:
    """The messages the app queued (and committed) in its outbox."""
    return Mailbox(app_settings, create_sessionmaker(engine))


# --- the app with the auth runtime: login, tokens, sessions, recovery ---------------------


def build_auth_app(
    settings: Settings,
    auth_settings: AuthSettings,
    *,
    store: KeyValueStore | None = None,
    passwords: Passwords | None = None,
    users_settings: UsersSettings | None = None,
) -> FastAPI:
    """``create_app`` without the service package. ``store`` replaces the store the
    lifespan opens, so several apps can share one in-process store as replicas share
    Redis (and the test can look into it)."""
    events = DomainEvents()
    events.subscribe(EmailDeliveryFailed, audit_service.on_email_delivery_failed)
    if passwords is None:
        passwords = Passwords(users_settings or fast_users_settings())
    users = UsersState(settings=passwords.settings, passwords=passwords)
    started: list[FastAPI] = []
    app = assemble(
        settings,
        emails=EMAILS,
        extensions=[
            *([static_state(store=store)] if store is not None else []),
            users_extension(users),
            auth_extension(auth_settings, users, events),
            expose_auth_state(started),
        ],
        events=events,
    )
    started.append(app)
    app.include_router(jwks_router)
    routers = (
        users_router,
        identities_router,
        admin_router,
        confirm_email_router,
        auth_router,
        oauth_router,
    )
    for router in routers:
        app.include_router(router, prefix=API_PREFIX)
    return app


@pytest.fixture
def make_auth_app(store: KeyValueStore) -> AuthAppFactory:
    """``(settings, auth_settings) -> app``; every app made shares the test's store
    unless given another ``store``."""

    def make(
        settings: Settings,
        auth_settings: AuthSettings,
        *,
        store: KeyValueStore = store,
        users_settings: UsersSettings | None = None,
    ) -> FastAPI:
        return build_auth_app(settings, auth_settings, store=store, users_settings=users_settings)

    return make


@pytest.fixture
def app_with(make_auth_app: AuthAppFactory, app_settings: Settings) -> AuthAppVariant:
    """``app_with(**auth_settings)``: an app like ``auth_app``, sharing the test's store,
    with other auth settings."""
    return lambda **overrides: make_auth_app(app_settings, fast_auth_settings(**overrides))


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
def auth_state(auth_app: FastAPI, api: httpx.AsyncClient) -> AuthState:
    """The started state of ``auth_app``."""
    started: AuthState = auth_app.state.auth
    return started


@pytest.fixture
def db(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions of the test's own, on the app's database, to arrange and inspect rows."""
    return create_sessionmaker(engine)


@pytest.fixture
def make_user(db: async_sessionmaker[AsyncSession], passwords: Passwords) -> UserFactory:
    """A committed, verified, active user whose password is ``password``; keyword
    arguments set any column (``password_hash`` wins over ``password``)."""

    async def make(*, password: str = PASSWORD, **overrides: Any) -> User:
        async with db() as session, session.begin():
            return await create_user_with_password(session, passwords, password, **overrides)

    return make


@pytest.fixture
def login(api: httpx.AsyncClient) -> Login:
    """Logs in through ``POST /auth/login``; the TokenPair as JSON."""

    async def do(email: str, password: str = PASSWORD) -> dict[str, Any]:
        response = await api.post(
            f"{API_PREFIX}/auth/login", json={"email": email, "password": password}
        )
        assert response.status_code == 200, response.text
        pair: dict[str, Any] = response.json()
        return pair

    return do


@pytest.fixture
def sign_in(make_user: UserFactory, login: Login) -> SignIn:
    """``await sign_in(*, sessions=1, **columns)``: a new user (``make_user(**columns)``)
    and the token pairs of ``sessions`` logins of theirs."""

    async def sign(*, sessions: int = 1, **columns: Any) -> tuple[User, list[dict[str, Any]]]:
        user = await make_user(**columns)
        return user, [await login(user.email) for _ in range(sessions)]

    return sign


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


@pytest.fixture
async def own_db(own_settings: Settings) -> AsyncIterator[Sessions]:
    """Sessions on the test's own database (``own_settings``)."""
    engine = create_async_engine(own_settings.database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def own_app(
    make_auth_app: AuthAppFactory, own_settings: Settings, auth_settings: AuthSettings
) -> FastAPI:
    """``auth_app`` on the test's own database."""
    return make_auth_app(own_settings, auth_settings)
