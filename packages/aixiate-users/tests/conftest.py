"""An app of core's pieces and the users routers, assembled the way aixiate-api does.

The users package cannot import auth, so a stand-in resolver maps bearer strings minted
by the test to principals (real token verification is tested in auth). Passwords are the
real :class:`Passwords` with cheap argon2 parameters. Requests run in the test's
rolled-back transaction: the app's session dependency yields the ``session`` fixture,
committing (a savepoint) on success and rolling back on error, as the real one does.
"""

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from functools import partial

import pytest
from aixiate_core.app import API_PREFIX, assemble, static_state
from aixiate_core.db import STORE_KEY, commit, get_session
from aixiate_core.email_templates import EmailTemplates
from aixiate_core.events import DomainEvents
from aixiate_core.outbox import Outbox
from aixiate_core.settings import Settings
from aixiate_core.testing import MintedTokens
from aixiate_core.testing.mail import Mailbox
from aixiate_users.emails import EMAILS
from aixiate_users.events import USER_EVENTS
from aixiate_users.models import User
from aixiate_users.passwords import Passwords
from aixiate_users.router import confirm_email_router
from aixiate_users.router import router as users_router
from aixiate_users.settings import UsersSettings
from aixiate_users.state import UsersState, users_extension
from aixiate_users.testing import (
    UserFactory,
    create_user_with_password,
    fast_passwords,
    fast_users_settings,
)
from fastapi import FastAPI, Request
from pydantic import SecretStr
from sqlmodel.ext.asyncio.session import AsyncSession

PUBLIC_URL = "https://app.example.com"

type Login = Callable[[User], dict[str, str]]


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "secret_key": SecretStr("users-tests-" + "s" * 40),
            "public_url": PUBLIC_URL,
            "outbox_dispatcher_enabled": False,
        }
    )


@pytest.fixture
def make_users_settings() -> Callable[..., UsersSettings]:
    return fast_users_settings


@pytest.fixture
def users_settings() -> UsersSettings:
    return fast_users_settings()


@pytest.fixture
def passwords(users_settings: UsersSettings) -> Iterator[Passwords]:
    with fast_passwords(users_settings) as service:
        yield service


@pytest.fixture
def account(session: AsyncSession, passwords: Passwords) -> UserFactory:
    """``account(**columns)``: a user whose password is ``PASSWORD``."""
    return partial(create_user_with_password, session, passwords)


@pytest.fixture
def published() -> list[object]:
    """Every user event the app (or a service call) published, in order."""
    return []


@pytest.fixture
def events(published: list[object]) -> DomainEvents:
    bus = DomainEvents()

    async def remember(_session: AsyncSession, event: object) -> None:
        published.append(event)

    for event_type in USER_EVENTS:
        bus.subscribe(event_type, remember)
    return bus


@pytest.fixture
def outbox(app_settings: Settings) -> Outbox:
    """Opens the app's outbox rows: same secret key, same derived key."""
    return Outbox(app_settings, EmailTemplates(EMAILS))


@pytest.fixture
def tokens() -> MintedTokens:
    return MintedTokens()


@pytest.fixture
def login(tokens: MintedTokens) -> Login:
    """Bearer headers for a user, carrying the roles the user has right now."""
    return lambda user: tokens.mint(user.id, user.roles)


def build_app(
    settings: Settings,
    users_settings: UsersSettings,
    passwords: Passwords,
    tokens: MintedTokens,
    events: DomainEvents,
    sessionmaker: Callable[[], AbstractAsyncContextManager[AsyncSession]] | None = None,
) -> FastAPI:
    """The users routers in an app assembled like aixiate-api's create_app(); with
    ``sessionmaker``, requests open their sessions from it instead of the engine's."""
    overrides: dict[str, object] = {"principal_resolver": tokens}
    if sessionmaker is not None:
        overrides["sessionmaker"] = sessionmaker
    users = UsersState(settings=users_settings, passwords=passwords)
    app = assemble(
        settings,
        emails=EmailTemplates(EMAILS),
        extensions=[users_extension(users), static_state(**overrides)],
        events=events,
        background=False,
    )
    app.include_router(users_router, prefix=API_PREFIX)
    app.include_router(confirm_email_router, prefix=API_PREFIX)
    return app


@pytest.fixture
def app(
    app_settings: Settings,
    users_settings: UsersSettings,
    session: AsyncSession,
    passwords: Passwords,
    tokens: MintedTokens,
    events: DomainEvents,
) -> FastAPI:
    """The app, serving every request in the test's rolled-back transaction."""

    async def test_session(request: Request) -> AsyncIterator[AsyncSession]:
        # What the test set up counts as committed before the request, so an error
        # rolls back the request's own work only, as on a real database.
        await session.commit()
        session.info[STORE_KEY] = request.state.store
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await commit(session)  # core's unit of work, with its commit hooks

    @asynccontextmanager
    async def test_sessionmaker() -> AsyncIterator[AsyncSession]:
        yield session  # reads on cache misses see the test's data too

    app = build_app(app_settings, users_settings, passwords, tokens, events, test_sessionmaker)
    app.dependency_overrides[get_session] = test_session
    return app


@pytest.fixture
def committing_app(
    app_settings: Settings,
    users_settings: UsersSettings,
    passwords: Passwords,
    tokens: MintedTokens,
    events: DomainEvents,
) -> FastAPI:
    """The app on its own engine and real unit of work: requests commit for good, so a
    test using it cleans up after itself."""
    return build_app(app_settings, users_settings, passwords, tokens, events)


@pytest.fixture
def mailbox(session: AsyncSession, app_settings: Settings) -> Mailbox:
    """The emails queued in this test's transaction."""
    return Mailbox(app_settings, lambda: nullcontext(session))
