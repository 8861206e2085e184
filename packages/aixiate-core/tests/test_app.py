"""assemble(): the lifespan extensions every app is built from, in order, and torn down."""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aixiate_core.app import Extension, assemble, static_state
from aixiate_core.resources import State
from aixiate_core.settings import Settings
from aixiate_core.testing import serve
from fastapi import APIRouter, Request


def recording(name: str, log: list[str]) -> Extension:
    """An extension that notes its start and stop and what it saw of earlier ones."""

    @asynccontextmanager
    async def extend(state: State) -> AsyncIterator[Mapping[str, Any]]:
        seen = sorted(key for key in dict(state) if key.startswith("ext_"))
        log.append(f"start {name} after {seen}")
        try:
            yield {f"ext_{name}": name}
        finally:
            log.append(f"stop {name}")

    return extend


def state_route() -> APIRouter:
    router = APIRouter()

    @router.get("/state")
    async def read(request: Request) -> dict[str, str | None]:
        return {key: getattr(request.state, key, None) for key in ("ext_a", "ext_b", "extra")}

    return router


class TestAssemble:
    async def test_extensions_run_in_order_and_stop_in_reverse(self, settings: Settings) -> None:
        log: list[str] = []
        app = assemble(
            settings,
            extensions=[recording("a", log), recording("b", log), static_state(extra="x")],
            background=False,
        )
        app.include_router(state_route())

        async with serve(app) as client:
            seen = (await client.get("/state")).json()

        assert seen == {"ext_a": "a", "ext_b": "b", "extra": "x"}
        assert log == ["start a after []", "start b after ['ext_a']", "stop b", "stop a"]

    async def test_errors_are_problems_and_requests_get_an_id(self, settings: Settings) -> None:
        app = assemble(settings, background=False)

        async with serve(app) as client:
            missing = await client.get("/nowhere")

        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["request_id"] == missing.headers["x-request-id"]

    def test_fastapi_options_pass_through(self, settings: Settings) -> None:
        app = assemble(settings, title="Embedded", version="9.9")

        assert (app.title, app.version) == ("Embedded", "9.9")
