"""An app of core's pieces and the audit router, wired the way aixiate-api wires it.

Audit cannot import auth: a stand-in resolver maps bearer strings minted by the test to
principals. Requests commit for real (the chain is shared by the whole run), so tests
that tamper with rows do it inside the rolled-back ``session`` fixture instead.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from uuid import UUID, uuid4

import httpx
import pytest
from aixiate_audit.router import router as audit_router
from aixiate_core.errors import InvalidToken, install_error_handlers
from aixiate_core.metrics import Metrics
from aixiate_core.middleware import RequestMiddleware
from aixiate_core.resources import State, open_resources
from aixiate_core.security import Principal, register_principal_resolver
from aixiate_core.settings import Settings
from aixiate_core.testing import serve
from fastapi import FastAPI, Request

API_PREFIX = "/api/v1"

type Login = Callable[..., dict[str, str]]


class BearerTokens:
    def __init__(self) -> None:
        self.principals: dict[str, Principal] = {}

    async def __call__(self, request: Request, token: str) -> Principal:
        principal = self.principals.get(token)
        if principal is None:
            raise InvalidToken()
        return principal

    def login(self, user_id: UUID | None = None, *, admin: bool = False) -> dict[str, str]:
        token = f"test-{uuid4().hex}"
        roles = frozenset({"admin"} if admin else set())
        self.principals[token] = Principal(
            user_id=user_id or uuid4(), session_id=uuid4(), roles=roles
        )
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens() -> BearerTokens:
    return BearerTokens()


@pytest.fixture
def login(tokens: BearerTokens) -> Login:
    """``login(user_id=None, admin=False)``: headers with a bearer token for a new principal."""
    return tokens.login


@pytest.fixture
async def client(settings: Settings, tokens: BearerTokens) -> AsyncIterator[httpx.AsyncClient]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        async with open_resources(settings) as state:
            yield state

    app = FastAPI(lifespan=lifespan)
    app.state.settings = settings
    metrics = Metrics()
    install_error_handlers(app)
    app.add_middleware(RequestMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    register_principal_resolver(app, tokens)
    app.include_router(audit_router, prefix=API_PREFIX)
    async with serve(app) as http:
        yield http
