"""Helpers for tests of this package and of the service that assembles it.

They live in the package rather than in a conftest: test modules run under
``--import-mode=importlib``, so a conftest cannot be imported by another suite.
"""

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from typing import Any
from uuid import UUID

import httpx
from aixiate_core.app import Extension
from aixiate_core.resources import State
from aixiate_users.models import User
from aixiate_users.testing import UserFactory
from fastapi import FastAPI

from aixiate_auth.state import STATE_KEY

__all__ = [
    "AuthAppFactory",
    "AuthAppVariant",
    "EmailFactory",
    "Login",
    "SignIn",
    "UserFactory",
    "expose_auth_state",
    "flow_cookie",
    "jwt_part",
    "kid_of",
    "session_id_of",
]

# The shapes of the factory fixtures in this package's conftest, for the tests' annotations;
# ``make_user(*, password=PASSWORD, **columns)`` is a ``UserFactory``.
#: ``make_auth_app(settings, auth_settings, ...)``
type AuthAppFactory = Callable[..., FastAPI]
#: ``app_with(**auth_settings)``: the test's app with other auth settings.
type AuthAppVariant = Callable[..., FastAPI]
#: ``login(email, password=PASSWORD)``: the token pair as JSON.
type Login = Callable[..., Awaitable[dict[str, Any]]]
#: ``sign_in(*, sessions=1, **columns)``: a new user and the token pairs of as many logins.
type SignIn = Callable[..., Awaitable[tuple[User, list[dict[str, Any]]]]]
#: ``new_email(prefix="user")``: an address no test used before.
type EmailFactory = Callable[..., str]


def expose_auth_state(app: list[FastAPI]) -> Extension:
    """An extension that puts the started ``AuthState`` on ``app[0].state.auth``, for a
    test to look into (its key ring, its lockout clock). ``app`` is filled in once the
    app exists; the extension runs only at start-up."""

    @asynccontextmanager
    async def extend(state: State) -> AsyncIterator[Mapping[str, Any]]:
        app[0].state.auth = dict(state)[STATE_KEY]
        yield {}

    return extend


def jwt_part(token: str, index: int) -> dict[str, Any]:
    """A JWT's header (0) or claims (1), read without verifying anything."""
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def kid_of(token: str) -> str:
    """The id of the key that signed ``token``."""
    return str(jwt_part(token, 0)["kid"])


def session_id_of(token: str) -> UUID:
    """The session an access token belongs to."""
    return UUID(jwt_part(token, 1)["sid"])


def flow_cookie(response: httpx.Response) -> dict[str, str]:
    """The ``Cookie`` header that brings a social-login flow's cookie (set by
    ``response``, the authorize redirect or the start of a link) back to the callback.
    Test clients on plain http do not send ``Secure`` cookies by themselves."""
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if "__Host-aixiate_oauth" in jar:
            return {"Cookie": f"__Host-aixiate_oauth={jar['__Host-aixiate_oauth'].value}"}
    raise AssertionError("the response set no flow cookie")
