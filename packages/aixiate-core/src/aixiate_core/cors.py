"""CORS for browser apps on other origins (``AIXIATE_CORS_ORIGINS``), with credentials.

Starlette's middleware does the work; this adds what the service promises on top of it:
a refused preflight is an RFC 9457 problem like every other error, and answers always
vary by ``Origin`` so no cache hands one origin's answer to another. Preflights are
answered here, before any route, so they never need a token and never count toward a
rate limit.
"""

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aixiate_core.errors import problem_response

#: Request headers a browser app may send: its bearer token, JSON bodies, the CSRF
#: token of cookie transport, and a request id of its own.
ALLOWED_HEADERS = ("Authorization", "Content-Type", "X-CSRF-Token", "X-Request-ID")
#: Response headers its scripts may read.
EXPOSED_HEADERS = (
    "X-Request-ID",
    "X-CSRF-Token",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "WWW-Authenticate",
)
ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class ProblemCORSMiddleware(CORSMiddleware):
    def __init__(self, app: ASGIApp, *, origins: Sequence[str], max_age: int) -> None:
        super().__init__(
            app,
            allow_origins=list(origins),
            allow_methods=list(ALLOWED_METHODS),
            allow_headers=list(ALLOWED_HEADERS),
            expose_headers=list(EXPOSED_HEADERS),
            allow_credentials=True,
            max_age=max_age,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            if "origin" not in headers:
                # Not a browser preflight; the router answers it like any OPTIONS.
                await self.app(scope, receive, send)
                return
            response = self._preflight(scope, headers)
            await response(scope, receive, send)
            return

        async def vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_vary_origin(message)
            await send(message)

        await super().__call__(scope, receive, vary)

    def _preflight(self, scope: Scope, headers: Headers) -> Response:
        answer = self.preflight_response(request_headers=headers)
        answer.headers["Vary"] = "Origin"
        if answer.status_code < 400:
            return answer
        refused = bytes(answer.body).decode().removeprefix("Disallowed CORS ")
        return problem_response(
            Request(scope),
            status=403,
            code="cors_refused",
            title="CORS request refused",
            detail=f"This cross-origin request is not allowed ({refused}).",
            headers={"Vary": "Origin"},
        )


def _add_vary_origin(message: Message) -> None:
    raw: list[tuple[bytes, bytes]] = list(message.get("headers", []))
    for name, value in raw:
        if name.lower() == b"vary" and b"origin" in value.lower():
            return
    raw.append((b"vary", b"Origin"))
    message["headers"] = raw
