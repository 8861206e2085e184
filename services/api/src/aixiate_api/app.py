"""Assembles the packages into one FastAPI app."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aixiate_audit.router import router as audit_router
from aixiate_auth import emails as auth_emails
from aixiate_auth.router import jwks_router
from aixiate_auth.router import router as auth_router
from aixiate_auth.runtime import AuthRuntime
from aixiate_auth.settings import AuthSettings, get_auth_settings
from aixiate_core.email_templates import EmailTemplates
from aixiate_core.errors import install_error_handlers
from aixiate_core.events import DomainEvents
from aixiate_core.health import router as operations_router
from aixiate_core.logging import configure_logging
from aixiate_core.metrics import Metrics
from aixiate_core.middleware import RequestMiddleware
from aixiate_core.ratelimit import global_rate_limit
from aixiate_core.resources import State, open_resources, running_background
from aixiate_core.security import (
    register_password_service,
    register_principal_resolver,
    register_token_url,
)
from aixiate_core.settings import Settings, get_settings
from aixiate_users import emails as users_emails
from aixiate_users.router import router as users_router
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute

from aixiate_api.wiring import purge_jobs, subscribe_all

API_PREFIX = "/api/v1"


def _operation_id(route: APIRoute) -> str:
    # Stable, readable ids for generated clients: "users-update_me", not a path hash.
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(
    settings: Settings | None = None, auth_settings: AuthSettings | None = None
) -> FastAPI:
    settings = settings or get_settings()
    settings.check_safe()
    configure_logging(settings)

    auth = AuthRuntime(auth_settings or get_auth_settings())
    events = subscribe_all(DomainEvents(), auth)
    emails = EmailTemplates(users_emails.EMAILS, auth_emails.EMAILS)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        async with open_resources(settings, emails=emails) as state:
            await auth.start(state)
            try:
                async with running_background(state, events, purge_jobs(settings)):
                    yield state
            finally:
                auth.close()

    app = FastAPI(
        title="Aixiate",
        summary="Authentication, users and audit for FastAPI services.",
        version="0.1.0",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.events = events
    app.state.auth = auth
    register_principal_resolver(app, auth)
    register_password_service(app, auth.passwords)
    register_token_url(app, f"{API_PREFIX}/auth/token")
    install_error_handlers(app)
    app.add_middleware(
        RequestMiddleware,
        metrics=app.state.metrics,
        max_body_bytes=settings.max_body_bytes,
        trusted_proxies=settings.trusted_proxies,
    )
    # The ceiling per client IP covers the API and the JWKS, not health and metrics.
    api_limit = [Depends(global_rate_limit)] if settings.rate_limit_enabled else []
    # users first: GET /users/me is the hot read, routes are matched in order, and no
    # two routers share a path, so the order changes nothing else.
    for router in (users_router, auth_router, audit_router):
        app.include_router(router, prefix=API_PREFIX, dependencies=api_limit)
    app.include_router(jwks_router, dependencies=api_limit)
    app.include_router(operations_router)
    return app
