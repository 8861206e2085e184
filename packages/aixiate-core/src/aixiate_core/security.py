"""Who is calling: the ``Principal`` and the dependencies routes use to require one.

Core defines the contract only. aixiate-auth implements :class:`PrincipalResolver`
(token verification plus session liveness) and puts it into the lifespan state under
``principal_resolver``, so the users and audit packages can protect routes without
importing auth.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol
from uuid import UUID

from fastapi import Depends, FastAPI, Request
from fastapi.security import OAuth2PasswordBearer

from aixiate_core.errors import Forbidden, MfaRequired, NotAuthenticated
from aixiate_core.openapi import amend_openapi
from aixiate_core.settings import Settings

SCHEME_NAME = "OAuth2PasswordBearer"


#: The RFC 8176 method that says a login used more than one factor.
MFA_METHOD = "mfa"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: UUID
    session_id: UUID
    roles: frozenset[str]
    #: How the session's login was proven (RFC 8176 ``amr``): ``pwd``, ``otp``, ``mfa``.
    amr: frozenset[str] = frozenset()

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def used_mfa(self) -> bool:
        return MFA_METHOD in self.amr


class PrincipalResolver(Protocol):
    async def __call__(self, request: Request, token: str) -> Principal:
        """Returns the caller, or raises ``InvalidToken`` (401) for a bad or revoked token."""
        ...


#: The lifespan state entry that holds the app's resolver.
RESOLVER_STATE_KEY = "principal_resolver"


class BearerPrincipal(OAuth2PasswordBearer):
    """The bearer scheme and the caller in one dependency.

    Being the scheme itself, it shows in OpenAPI (Swagger UI's Authorize button) as
    ``OAuth2PasswordBearer`` does, while a request solves one dependency instead of two:
    every protected route pays for this. Only the ``Authorization`` header is read;
    tokens in query strings are ignored.

    ``token_url`` is only what the OpenAPI document names by default: routes share one
    instance made at import, before anyone knows where the token route is mounted, so
    the app gives the real one with :func:`register_token_url`.
    """

    def __init__(self, token_url: str = "token") -> None:  # noqa: S107 - a path, not a secret
        # auto_error=False: we raise our own 401 problem with the WWW-Authenticate header.
        super().__init__(tokenUrl=token_url, scheme_name=SCHEME_NAME, auto_error=False)

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        token = await super().__call__(request)
        if not token:
            raise NotAuthenticated()
        resolver: PrincipalResolver | None = getattr(request.state, RESOLVER_STATE_KEY, None)
        if resolver is None:
            # A deployment error, not the caller's: fail closed and loudly.
            raise RuntimeError("no PrincipalResolver in the app's lifespan state")
        principal = await resolver(request, token)
        request.state.principal = principal
        return principal


get_principal = BearerPrincipal()


def register_token_url(app: FastAPI, token_url: str) -> None:
    """Where Swagger UI's Authorize button posts the password form. The route that issues
    tokens is auth's, and its path is decided by whoever mounts it, so the app says it."""

    def amend(document: dict[str, Any]) -> None:
        scheme = document.get("components", {}).get("securitySchemes", {}).get(SCHEME_NAME)
        if scheme is not None:
            scheme["flows"]["password"]["tokenUrl"] = token_url

    amend_openapi(app, amend)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def check_role(principal: Principal, role: str, mfa_roles: frozenset[str]) -> None:
    """403 ``forbidden`` without ``role``; 403 ``mfa_required`` when ``role`` is one of
    ``mfa_roles`` and the caller's login had no second factor."""
    if not principal.has_role(role):
        raise Forbidden(f"This requires the {role!r} role.")
    if role in mfa_roles and not principal.used_mfa:
        raise MfaRequired()


def require_role(role: str) -> Callable[[Request, Principal], Awaitable[Principal]]:
    """A dependency that admits only callers holding ``role`` (403 ``forbidden``
    otherwise) and, when ``AIXIATE_MFA_REQUIRED_ROLES`` names it, who logged in with a
    second factor (403 ``mfa_required``)."""

    async def dependency(request: Request, principal: CurrentPrincipal) -> Principal:
        settings: Settings = request.state.settings
        check_role(principal, role, settings.mfa_required_roles)
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency


AdminPrincipal = Annotated[Principal, Depends(require_role("admin"))]
