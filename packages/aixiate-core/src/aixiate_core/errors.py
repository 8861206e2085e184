"""RFC 9457 problem details: domain errors carry their status, one set of handlers renders all.

Every error a client can see (domain errors, HTTP errors, validation errors, database and
cache outages, and bugs) leaves through :func:`problem_response`, so the body shape and the
``request_id`` are the same everywhere and nothing internal leaks. Routes document theirs
with :func:`problem_responses`, all pointing at one ``Problem`` schema in the OpenAPI
document.
"""

import sqlite3
from collections import defaultdict
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from aixiate_core.context import current_request_id
from aixiate_core.openapi import amend_openapi
from aixiate_core.schemas import Problem

PROBLEM_BASE = "https://aixiate.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_SCHEMA_NAME = "Problem"

log = structlog.get_logger()


class AppError(Exception):
    """A failure the client should be told about; subclasses fix status, code and title."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"
    default_detail: ClassVar[str] = "The server could not complete the request."

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        super().__init__(self.detail)


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"
    title = "Bad request"
    default_detail = "The request could not be understood."


class NotAuthenticated(AppError):
    status_code = 401
    code = "not_authenticated"
    title = "Not authenticated"
    default_detail = "A valid bearer token is required."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class InvalidToken(AppError):
    status_code = 401
    code = "invalid_token"
    title = "Invalid token"
    default_detail = "The token is invalid, expired or revoked."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"
    title = "Forbidden"
    default_detail = "You are not allowed to do this."


class MfaRequired(Forbidden):
    """The caller proved only a password where a second factor is required."""

    code = "mfa_required"
    title = "Second factor required"
    default_detail = (
        "This requires signing in with a second factor: turn on two-step verification "
        "and sign in again."
    )


class NotFound(AppError):
    status_code = 404
    code = "not_found"
    title = "Not found"
    default_detail = "The resource does not exist."


class Conflict(AppError):
    status_code = 409
    code = "conflict"
    title = "Conflict"
    default_detail = "The request conflicts with the current state of the resource."


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"
    title = "Too many requests"
    default_detail = "Too many requests; try again later."

    def __init__(
        self,
        retry_after: int,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        merged = {**(headers or {}), "Retry-After": str(max(1, retry_after))}
        super().__init__(detail, headers=merged)


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"
    title = "Service unavailable"
    default_detail = "A backing service is not answering; try again shortly."

    def __init__(self, detail: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


# Codes for errors that Starlette/FastAPI raise themselves (routing, body parsing).
_HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def problem_response(
    request: Request,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code.replace("_", "-"),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "code": code,
        "request_id": current_request_id(),
    }
    if extra:
        body.update(extra)
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_CONTENT_TYPE
    )


_PROBLEM_REF = f"#/components/schemas/{PROBLEM_SCHEMA_NAME}"
_VALIDATION = (422, "validation_error", "The request is not valid; `errors` lists each field.")
_UNAUTHENTICATED = (401, "not_authenticated / invalid_token", "The bearer token is missing or bad.")
_FORBIDDEN = (403, "forbidden", "The caller lacks the admin role.")
_MFA_REQUIRED = (
    403,
    "mfa_required",
    "The admin role needs a second factor here (AIXIATE_MFA_REQUIRED_ROLES), and this "
    "session's login had none.",
)


def problem_responses(
    *errors: type[AppError], auth: bool = True, admin: bool = False, validation: bool = True
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: every problem it may answer, by status, as
    ``application/problem+json``, so generated clients know the error shapes.

    The schema is a reference, not a copy: :func:`install_error_handlers` puts the one
    ``Problem`` component into the app's document. A ``"model"`` entry would register it
    too, but FastAPI files a model under ``application/json``, which errors never are.
    """
    entries: list[tuple[int, str, str]] = [
        (error.status_code, error.code, error.default_detail) for error in errors
    ]
    if auth:
        entries.append(_UNAUTHENTICATED)
    if admin:
        entries.extend((_FORBIDDEN, _MFA_REQUIRED))
    if validation:
        entries.append(_VALIDATION)
    by_status: defaultdict[int, list[str]] = defaultdict(list)
    for status, code, detail in entries:
        line = f"`{code}`: {detail}"
        if line not in by_status[status]:
            by_status[status].append(line)
    return {
        status: {
            "description": "\n\n".join(lines),
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": _PROBLEM_REF}}},
        }
        for status, lines in sorted(by_status.items())
    }


def _document_problem(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    if PROBLEM_SCHEMA_NAME not in schemas:
        schemas[PROBLEM_SCHEMA_NAME] = Problem.model_json_schema(mode="serialization")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    if exc.status_code >= 500:
        # "problem", not "code": the log scrubber redacts fields named like secrets.
        log.error("request.failed", problem=exc.code, detail=exc.detail)
    return problem_response(
        request,
        status=exc.status_code,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        headers=exc.headers,
        extra=exc.extra,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _HTTP_CODES.get(status, "_".join(_phrase(status).lower().split()))
    # Starlette's default detail is the bare phrase; say something a client can act on.
    detail = exc.detail if exc.detail and exc.detail != _phrase(status) else None
    if detail is None:
        detail = {
            404: "No resource exists at this path.",
            405: f"The method {request.method} is not allowed on this path.",
        }.get(status, _phrase(status) + ".")
    return problem_response(
        request,
        status=status,
        code=code,
        title=_phrase(status),
        detail=str(detail),
        headers=exc.headers,
    )


def _validation_items(errors: Sequence[Any]) -> list[dict[str, Any]]:
    # Only loc/msg/type: pydantic's "input" and "ctx" may echo passwords or tokens back.
    return [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": err.get("type")}
        for err in errors
    ]


def _is_unsupported_body(request: Request, errors: Sequence[Any]) -> bool:
    # FastAPI parses JSON only for JSON content types; any other type leaves raw bytes that
    # then fail validation at loc ("body",). That is the client's media type, not its data.
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type and request.headers.get("content-length", "0") == "0":
        return False  # no body at all: nothing's media type to refuse, the body is missing
    if content_type == "application/json" or content_type.endswith("+json"):
        return False
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return False
    return any(tuple(err.get("loc", ())) == ("body",) for err in errors)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(err.get("type") == "json_invalid" for err in errors):
        return problem_response(
            request,
            status=400,
            code="malformed_json",
            title="Malformed JSON",
            detail="The request body is not valid JSON.",
        )
    if _is_unsupported_body(request, errors):
        return problem_response(
            request,
            status=415,
            code="unsupported_media_type",
            title="Unsupported Media Type",
            detail="Send the body as application/json.",
        )
    return problem_response(
        request,
        status=422,
        code="validation_error",
        title="Validation error",
        detail="The request is not valid; see errors.",
        extra={"errors": _validation_items(errors)},
    )


async def _backend_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Outages of PostgreSQL/Redis are the operator's problem, not a bug: 503 and retry.
    log.error("backend.unavailable", error_type=type(exc).__name__)
    return problem_response(
        request,
        status=503,
        code="service_unavailable",
        title="Service unavailable",
        detail="A backing service is not answering; try again shortly.",
        headers={"Retry-After": "5"},
    )


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means a backend could not be reached (as opposed to a bad query)."""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, PoolTimeoutError)):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc.orig, (OSError, TimeoutError))
    return isinstance(exc, (ConnectionError, TimeoutError))


def is_database_busy(exc: BaseException) -> bool:
    """SQLite's single write lock still held by another transaction after the busy
    timeout: contention, to retry shortly, not a bug."""
    return (
        isinstance(exc, DBAPIError)
        and isinstance(exc.orig, sqlite3.OperationalError)
        and "database is locked" in str(exc.orig)
    )


async def _db_error(request: Request, exc: Exception) -> JSONResponse:
    if is_connection_error(exc) or is_database_busy(exc):
        return await _backend_unavailable(request, exc)
    raise exc


def install_error_handlers(app: FastAPI) -> None:
    """Renders every error as a problem, and documents the body they render as the
    ``Problem`` component that :func:`problem_responses` refers to."""
    amend_openapi(app, _document_problem)
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RedisConnectionError, _backend_unavailable)
    app.add_exception_handler(RedisTimeoutError, _backend_unavailable)
    app.add_exception_handler(PoolTimeoutError, _backend_unavailable)
    app.add_exception_handler(DBAPIError, _db_error)
    app.add_exception_handler(ConnectionError, _backend_unavailable)
    # A backend that accepts the connection and then says nothing (asyncpg's connect
    # timeout) raises a bare TimeoutError, which is no ConnectionError.
    app.add_exception_handler(TimeoutError, _backend_unavailable)
