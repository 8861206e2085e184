"""Amendments to an app's OpenAPI document, for what no route can declare itself."""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI


def amend_openapi(app: FastAPI, amend: Callable[[dict[str, Any]], None]) -> None:
    """Runs ``amend`` on the document each time ``app.openapi()`` hands it out (as FastAPI's
    docs suggest, by replacing the method). FastAPI generates the document once and
    caches it, so ``amend`` sees the same document again and must be idempotent."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        amend(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
