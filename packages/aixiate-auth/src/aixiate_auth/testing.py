"""Helpers for tests of this package and of the service that assembles it.

They live in the package rather than in a conftest: test modules run under
``--import-mode=importlib``, so a conftest cannot be imported by another suite.
"""

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aixiate_core.app import Extension
from aixiate_core.resources import State
from aixiate_users.models import User
from fastapi import FastAPI

from aixiate_auth.state import STATE_KEY

# The shapes of the factory fixtures in this package's conftest, for the tests' annotations.
#: ``make_auth_app(settings, auth_settings, ...)``
type AuthAppFactory = Callable[..., FastAPI]
#: ``make_user(*, password=PASSWORD, **columns)``: a committed user who can log in.
type UserFactory = Callable[..., Awaitable[User]]
#: ``login(email, password=PASSWORD)``: the token pair as JSON.
type Login = Callable[..., Awaitable[dict[str, Any]]]
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
