"""Operations endpoints: liveness, readiness and Prometheus metrics."""

import asyncio
from collections.abc import Awaitable

import structlog
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from aixiate_core.db import ping as ping_database
from aixiate_core.errors import ServiceUnavailable, problem_response, problem_responses
from aixiate_core.metrics import Metrics
from aixiate_core.settings import Settings
from aixiate_core.store import KeyValueStore

log = structlog.get_logger()

router = APIRouter(tags=["operations"])


class NotReady(ServiceUnavailable):
    # Documents the readiness 503; the route answers it itself, with each check's result.
    code = "not_ready"
    title = "Not ready"
    default_detail = "The database or Redis is not answering."


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


@router.get("/health/live", response_model=Health)
async def live() -> Health:
    """Answers while the process serves requests; it checks nothing else on purpose."""
    return Health(status="ok")


@router.get(
    "/health/ready",
    response_model=Health,
    responses=problem_responses(NotReady, auth=False, validation=False),
)
async def ready(request: Request) -> Health | Response:
    """200 when the database (and Redis, when configured) answer within the timeout."""
    settings: Settings = request.state.settings
    probes: dict[str, Awaitable[None]] = {"database": ping_database(request.state.engine)}
    if settings.redis_url:
        store: KeyValueStore = request.state.store
        probes["redis"] = store.ping()
    results = await asyncio.gather(
        *(_probe(name, probe, settings.health_timeout_seconds) for name, probe in probes.items())
    )
    checks = dict(zip(probes, results, strict=True))
    if all(result == "ok" for result in checks.values()):
        return Health(status="ok", checks=checks)
    failing = ", ".join(name for name, result in checks.items() if result != "ok")
    return problem_response(
        request,
        status=503,
        code=NotReady.code,
        title=NotReady.title,
        detail=f"Not answering: {failing}.",
        headers={"Retry-After": "5"},
        extra={"checks": checks},
    )


async def _probe(name: str, probe: Awaitable[None], seconds: float) -> str:
    try:
        async with asyncio.timeout(seconds):
            await probe
    except TimeoutError:
        log.warning("health.check_failed", check=name, error="timeout")
        return "timeout"
    except Exception as exc:
        log.warning("health.check_failed", check=name, error=type(exc).__name__)
        return "error"
    return "ok"


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
