"""Helpers for tests of this package and of the service that assembles it.

They live in the package rather than in a conftest: test modules run under
``--import-mode=importlib``, so a conftest cannot be imported by another suite.
"""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aixiate_core.app import Extension
from aixiate_core.resources import State
from fastapi import FastAPI

from aixiate_auth.state import STATE_KEY


def expose_auth_state(app: list[FastAPI]) -> Extension:
    """An extension that puts the started ``AuthState`` on ``app[0].state.auth``, for a
    test to look into (its key ring, its lockout clock). ``app`` is filled in once the
    app exists; the extension runs only at start-up."""

    @asynccontextmanager
    async def extend(state: State) -> AsyncIterator[Mapping[str, Any]]:
        app[0].state.auth = dict(state)[STATE_KEY]
        yield {}

    return extend
