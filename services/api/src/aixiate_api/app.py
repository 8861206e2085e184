"""Assembles the packages into one FastAPI app."""

from collections.abc import Sequence

from aixiate_audit.router import router as audit_router
from aixiate_auth import emails as auth_emails
from aixiate_auth.oauth_router import identities_router, oauth_router
from aixiate_auth.router import admin_router as auth_admin_router
from aixiate_auth.router import jwks_router
from aixiate_auth.router import router as auth_router
from aixiate_auth.settings import AuthSettings, get_auth_settings
from aixiate_auth.state import auth_extension
from aixiate_core.app import API_PREFIX, Extension, assemble
from aixiate_core.email_templates import EmailTemplates
from aixiate_core.events import DomainEvents
from aixiate_core.health import router as operations_router
from aixiate_core.logging import configure_logging
from aixiate_core.ratelimit import global_rate_limit
from aixiate_core.security import register_token_url
from aixiate_core.settings import Settings, get_settings
from aixiate_users import emails as users_emails
from aixiate_users.router import confirm_email_router
from aixiate_users.router import router as users_router
from aixiate_users.settings import UsersSettings, get_users_settings
from aixiate_users.state import UsersState, users_extension
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute

from aixiate_api.wiring import purge_jobs, subscribe_all


def _operation_id(route: APIRoute) -> str:
    # Stable, readable ids for generated clients: "users-update_me", not a path hash.
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(
    settings: Settings | None = None,
    auth_settings: AuthSettings | None = None,
    users_settings: UsersSettings | None = None,
    *,
    extensions: Sequence[Extension] = (),
) -> FastAPI:
    """The service. Settings not given are read from the environment; whatever is given
    reaches every route, since each package's state is built from it at start-up.
    ``extensions`` add entries of their own to the lifespan state, after auth's."""
    settings = settings or get_settings()
    settings.check_safe()
    configure_logging(settings)

    events = subscribe_all(DomainEvents())
    users = UsersState.from_settings(users_settings or get_users_settings())
    app = assemble(
        settings,
        emails=EmailTemplates(users_emails.EMAILS, auth_emails.EMAILS),
        extensions=[
            users_extension(users),
            auth_extension(auth_settings or get_auth_settings(), users, events),
            *extensions,
        ],
        events=events,
        jobs=purge_jobs(settings),
        title="Aixiate",
        summary="Authentication, users and audit for FastAPI services.",
        version="0.1.0",
        generate_unique_id_function=_operation_id,
    )
    register_token_url(app, f"{API_PREFIX}/auth/token")
    # The ceiling per client IP covers the API and the JWKS, not health and metrics.
    api_limit = [Depends(global_rate_limit)] if settings.rate_limit_enabled else []
    # users first: GET /users/me is the hot read, routes are matched in order, and no
    # two routers share a path, so the order changes nothing else.
    routers = (
        users_router,
        identities_router,
        auth_admin_router,
        confirm_email_router,
        auth_router,
        oauth_router,
    )
    for router in routers:
        app.include_router(router, prefix=API_PREFIX, dependencies=api_limit)
    app.include_router(audit_router, prefix=API_PREFIX, dependencies=api_limit)
    app.include_router(jwks_router, dependencies=api_limit)
    app.include_router(operations_router)
    return app
