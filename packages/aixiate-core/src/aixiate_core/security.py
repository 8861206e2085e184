"""Who is calling: the ``Principal`` and the dependencies routes use to require one.

Core defines the contract only. aixiate-auth implements :class:`PrincipalResolver`
(token verification plus session liveness) and the service registers it on the app,
so the users and audit packages can protect routes without importing auth.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol
from uuid import UUID

from fastapi import Depends, FastAPI, Request
from fastapi.security import OAuth2PasswordBearer

from aixiate_core.errors import AppError, Forbidden, NotAuthenticated
from aixiate_core.openapi import amend_openapi

SCHEME_NAME = "OAuth2PasswordBearer"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: UUID
    session_id: UUID
    roles: frozenset[str]

    def has_role(self, role: str) -> bool:
        return role in self.roles


class PrincipalResolver(Protocol):
    async def __call__(self, request: Request, token: str) -> Principal:
        """Returns the caller, or raises ``InvalidToken`` (401) for a bad or revoked token."""
        ...


def register_principal_resolver(app: FastAPI, resolver: PrincipalResolver) -> None:
    app.state.principal_resolver = resolver


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
        resolver: PrincipalResolver | None = getattr(request.app.state, "principal_resolver", None)
        if resolver is None:
            # A deployment error, not the caller's: fail closed and loudly.
            raise RuntimeError("no PrincipalResolver registered on the app")
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


def require_role(role: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that admits only callers holding ``role`` (403 ``forbidden`` otherwise)."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if not principal.has_role(role):
            raise Forbidden(f"This requires the {role!r} role.")
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency


AdminPrincipal = Annotated[Principal, Depends(require_role("admin"))]


class WeakPassword(AppError):
    status_code = 422
    code = "weak_password"
    title = "Weak password"
    default_detail = "The password does not meet the password policy."


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    valid: bool
    #: A fresh hash when the stored one uses a deprecated scheme or outdated parameters.
    new_hash: str | None = None


class PasswordService(Protocol):
    """Hashing, verification and policy, implemented by aixiate-auth.

    Lower packages (users' admin create, email change, account deletion) need passwords
    but cannot import auth; they depend on this protocol instead.
    """

    async def hash(self, password: str) -> str: ...

    async def verify(self, password: str, password_hash: str | None) -> PasswordCheck:
        """Constant work whether or not ``password_hash`` is None (unknown user)."""
        ...

    def check_policy(self, password: str, *, email: str | None = None) -> None:
        """Raises :class:`WeakPassword` naming the reason."""
        ...


def register_password_service(app: FastAPI, service: PasswordService) -> None:
    app.state.password_service = service


def get_password_service(request: Request) -> PasswordService:
    service: PasswordService | None = getattr(request.app.state, "password_service", None)
    if service is None:
        raise RuntimeError("no PasswordService registered on the app")
    return service


PasswordServiceDep = Annotated[PasswordService, Depends(get_password_service)]
