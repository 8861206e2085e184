"""An app of core's pieces and the audit router, wired the way aixiate-api wires it.

Audit cannot import auth: a stand-in resolver maps bearer strings minted by the test to
principals. Requests commit for real (the chain is shared by the whole run), so tests
that tamper with rows do it inside the rolled-back ``session`` fixture instead.
"""

from collections.abc import AsyncIterator, Callable
from uuid import UUID

import httpx
import pytest
from aixiate_audit.router import router as audit_router
from aixiate_core.app import API_PREFIX, assemble, static_state
from aixiate_core.settings import Settings
from aixiate_core.testing import MintedTokens, serve

type Login = Callable[..., dict[str, str]]


@pytest.fixture
def tokens() -> MintedTokens:
    return MintedTokens()


@pytest.fixture
def login(tokens: MintedTokens) -> Login:
    """``login(user_id=None, admin=False)``: headers with a bearer token for a new principal."""

    def mint(user_id: UUID | None = None, *, admin: bool = False) -> dict[str, str]:
        return tokens.mint(user_id, {"admin"} if admin else ())

    return mint


@pytest.fixture
async def client(settings: Settings, tokens: MintedTokens) -> AsyncIterator[httpx.AsyncClient]:
    app = assemble(settings, extensions=[static_state(principal_resolver=tokens)], background=False)
    app.include_router(audit_router, prefix=API_PREFIX)
    async with serve(app) as http:
        yield http
