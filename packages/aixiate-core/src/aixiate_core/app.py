"""One way to assemble an app from core's pieces, for the service and every test suite.

:func:`assemble` wires what every Aixiate app has: the lifespan resources (database,
store, outbox, rate limiter), what each package adds to them (an :data:`Extension`), the
background loops, the request middleware, the RFC 9457 error handlers and the metrics.
The caller includes its routers; the service adds logging and its route order.
"""

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI

from aixiate_core.cors import ProblemCORSMiddleware
from aixiate_core.email_templates import EmailTemplates
from aixiate_core.errors import install_error_handlers
from aixiate_core.events import DomainEvents
from aixiate_core.housekeeping import PurgeJob
from aixiate_core.metrics import Metrics
from aixiate_core.middleware import RequestMiddleware
from aixiate_core.resources import State, open_resources, running_background
from aixiate_core.settings import Settings

API_PREFIX = "/api/v1"

#: What a package adds to the lifespan state: called with the state built so far (core's
#: resources and the entries of earlier extensions), it enters once at start-up, yields
#: its entries (e.g. ``{"auth": AuthState}``) and cleans up at shutdown.
type Extension = Callable[[State], AbstractAsyncContextManager[Mapping[str, Any]]]


def static_state(**entries: Any) -> Extension:
    """An extension that only adds fixed entries (test doubles, a shared store)."""

    @asynccontextmanager
    async def extend(_: State) -> AsyncIterator[Mapping[str, Any]]:
        yield entries

    return extend


def assemble(
    settings: Settings,
    *,
    emails: EmailTemplates | None = None,
    extensions: Sequence[Extension] = (),
    events: DomainEvents | None = None,
    jobs: Mapping[str, PurgeJob] | None = None,
    background: bool = True,
    **fastapi_options: Any,
) -> FastAPI:
    """An app with core's lifespan, middleware, error handlers and metrics, and no routes.

    ``emails`` are the templates of every email the app sends (None: it sends none).
    Extensions run in order at start-up, each seeing the entries of those before it, and
    are closed in reverse order at shutdown, after the background loops stopped. With
    ``background`` false, neither the outbox dispatcher nor housekeeping runs, whatever
    the settings say (tests that look at queued rows or count commits).
    """
    events = events if events is not None else DomainEvents()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        async with open_resources(settings, emails=emails) as state, AsyncExitStack() as stack:
            entries = cast("dict[str, Any]", state)
            for extension in extensions:
                entries.update(await stack.enter_async_context(extension(state)))
            if not background:
                yield state
                return
            async with running_background(state, events, jobs or {}):
                yield state

    app = FastAPI(lifespan=lifespan, **fastapi_options)
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.events = events
    install_error_handlers(app)
    if settings.cors_origins:
        # Inside the request middleware, so preflights get a request id and a log line.
        app.add_middleware(
            ProblemCORSMiddleware,
            origins=settings.cors_origins,
            max_age=settings.cors_max_age_seconds,
        )
    app.add_middleware(
        RequestMiddleware,
        metrics=app.state.metrics,
        max_body_bytes=settings.max_body_bytes,
        trusted_proxies=settings.trusted_proxies,
    )
    return app
