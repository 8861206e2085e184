"""An app of core's pieces and the users router, wired the way aixiate-api wires it.

The users package cannot import auth, so two stand-ins take its place: a resolver that
maps bearer strings minted by the test to principals (real token verification is
tested in auth), and a small scrypt PasswordService. Requests run in the test's
rolled-back transaction: the app's session dependency yields the ``session`` fixture,
committing (a savepoint) on success and rolling back on error, as the real one does.
"""

import hashlib
import hmac
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from uuid import uuid4

import httpx
import pytest
from aixiate_core.db import STORE_KEY, SessionDep, SessionMakerDep, commit, get_session
from aixiate_core.email import EmailMessage
from aixiate_core.email_templates import EmailTemplates
from aixiate_core.errors import InvalidToken, install_error_handlers
from aixiate_core.events import (
    DomainEvents,
    EventsDep,
    UserDeactivated,
    UserDeleted,
    UserEmailChanged,
    UserRolesChanged,
    UserUnlocked,
)
from aixiate_core.metrics import Metrics
from aixiate_core.middleware import RequestMiddleware
from aixiate_core.outbox import Outbox, OutboxEmail
from aixiate_core.resources import State, open_resources
from aixiate_core.security import (
    PasswordCheck,
    PasswordService,
    Principal,
    WeakPassword,
    register_password_service,
    register_principal_resolver,
)
from aixiate_core.settings import Settings
from aixiate_core.testing import serve
from aixiate_users import service as users_service
from aixiate_users.emails import EMAILS
from aixiate_users.models import User
from aixiate_users.router import router as users_router
from aixiate_users.schemas import UserRead
from aixiate_users.settings import UsersSettings, get_users_settings
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, SecretStr
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

API_PREFIX = "/api/v1"
PUBLIC_URL = "https://app.example.com"
USER_EVENTS = (UserDeleted, UserDeactivated, UserRolesChanged, UserEmailChanged, UserUnlocked)

type Login = Callable[[User], dict[str, str]]
type Mailbox = Callable[[], Awaitable[list[EmailMessage]]]


class ScryptPasswords:
    """PasswordService for tests: scrypt with cheap parameters, a 12-character minimum,
    and a ``plain$`` legacy scheme that verifies and asks for a rehash."""

    MIN_LENGTH = 12

    async def hash(self, password: str) -> str:
        salt = os.urandom(16)
        return f"scrypt${salt.hex()}${self._derive(password, salt).hex()}"

    async def verify(self, password: str, password_hash: str | None) -> PasswordCheck:
        if password_hash is not None and password_hash.startswith("plain$"):
            valid = hmac.compare_digest(password_hash.removeprefix("plain$"), password)
            return PasswordCheck(valid=valid, new_hash=await self.hash(password) if valid else None)
        if password_hash is None:
            self._derive(password, b"\0" * 16)  # the same work for unknown users
            return PasswordCheck(valid=False)
        _, salt, digest = password_hash.split("$")
        expected = self._derive(password, bytes.fromhex(salt)).hex()
        return PasswordCheck(valid=hmac.compare_digest(expected, digest))

    def check_policy(self, password: str, *, email: str | None = None) -> None:
        if len(password) < self.MIN_LENGTH:
            raise WeakPassword(f"The password must have at least {self.MIN_LENGTH} characters.")
        if email and email.split("@")[0].lower() in password.lower():
            raise WeakPassword("The password must not contain the email address.")

    @staticmethod
    def _derive(password: str, salt: bytes) -> bytes:
        return hashlib.scrypt(password.encode(), salt=salt, n=2**8, r=8, p=1, dklen=32)


class BearerTokens:
    """The PrincipalResolver: bearer strings the test minted, and nothing else."""

    def __init__(self) -> None:
        self.principals: dict[str, Principal] = {}

    async def __call__(self, request: Request, token: str) -> Principal:
        principal = self.principals.get(token)
        if principal is None:
            raise InvalidToken()
        return principal

    def login(self, user: User) -> dict[str, str]:
        token = f"test-{uuid4().hex}"
        self.principals[token] = Principal(
            user_id=user.id, session_id=uuid4(), roles=frozenset(user.roles)
        )
        return {"Authorization": f"Bearer {token}"}


class ConfirmEmail(BaseModel):
    token: str


def auth_stand_in() -> APIRouter:
    """``POST /auth/confirm-email`` as aixiate-auth mounts it: one call to the users service."""
    router = APIRouter(prefix="/auth", tags=["auth"])

    @router.post("/confirm-email", response_model=UserRead)
    async def confirm_email(
        body: ConfirmEmail, session: SessionDep, sessionmaker: SessionMakerDep, events: EventsDep
    ) -> User:
        return await users_service.confirm_email_change(
            session, body.token, events=events, sessionmaker=sessionmaker
        )

    return router


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
def users_settings() -> UsersSettings:
    return UsersSettings(email_verification_ttl_seconds=86400, _env_file=None)


@pytest.fixture
def passwords() -> PasswordService:
    return ScryptPasswords()


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
def tokens() -> BearerTokens:
    return BearerTokens()


@pytest.fixture
def login(tokens: BearerTokens) -> Login:
    """Bearer headers for a user, carrying the roles the user has right now."""
    return tokens.login


def build_app(
    settings: Settings,
    users_settings: UsersSettings,
    passwords: PasswordService,
    tokens: BearerTokens,
    events: DomainEvents,
    sessionmaker: Callable[[], AbstractAsyncContextManager[AsyncSession]] | None = None,
) -> FastAPI:
    """The users router in an app assembled like aixiate-api's create_app(); with
    ``sessionmaker``, requests open their sessions from it instead of the engine's."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        async with open_resources(settings, emails=EmailTemplates(EMAILS)) as state:
            if sessionmaker is not None:
                state["sessionmaker"] = sessionmaker  # type: ignore[typeddict-item]
            yield state

    app = FastAPI(lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.events = events
    install_error_handlers(app)
    app.add_middleware(
        RequestMiddleware,
        metrics=app.state.metrics,
        max_body_bytes=settings.max_body_bytes,
        trusted_proxies=settings.trusted_proxies,
    )
    app.include_router(users_router, prefix=API_PREFIX)
    app.include_router(auth_stand_in(), prefix=API_PREFIX)
    register_principal_resolver(app, tokens)
    register_password_service(app, passwords)
    app.dependency_overrides[get_users_settings] = lambda: users_settings
    return app


@pytest.fixture
def app(
    app_settings: Settings,
    users_settings: UsersSettings,
    session: AsyncSession,
    passwords: PasswordService,
    tokens: BearerTokens,
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
    passwords: PasswordService,
    tokens: BearerTokens,
    events: DomainEvents,
) -> FastAPI:
    """The app on its own engine and real unit of work: requests commit for good, so a
    test using it cleans up after itself."""
    return build_app(app_settings, users_settings, passwords, tokens, events)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(app) as http:
        yield http


@pytest.fixture
def mailbox(session: AsyncSession, outbox: Outbox) -> Mailbox:
    """The emails queued in this test's transaction, oldest first, decrypted."""

    async def read() -> list[EmailMessage]:
        statement = select(OutboxEmail).order_by(col(OutboxEmail.created_at))
        rows = (await session.exec(statement)).all()
        return [outbox.open(row) for row in rows]

    return read
