"""Facts about the current request, readable anywhere below the middleware.

The middleware sets them once per request; audit events and problem bodies read them
here instead of having every function pass a request around.
"""

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestInfo:
    request_id: str
    ip: str | None
    user_agent: str | None


_current: ContextVar[RequestInfo | None] = ContextVar("aixiate_request", default=None)


def current_request() -> RequestInfo | None:
    return _current.get()


def current_request_id() -> str | None:
    info = _current.get()
    return info.request_id if info else None


def set_current_request(info: RequestInfo | None) -> Token[RequestInfo | None]:
    return _current.set(info)


def reset_current_request(token: Token[RequestInfo | None]) -> None:
    _current.reset(token)
