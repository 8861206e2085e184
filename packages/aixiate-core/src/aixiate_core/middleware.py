"""The one middleware every request passes: request id, client IP, access log, metrics,
and the last line of defence that turns a bug into a 500 problem instead of a traceback.

Written as plain ASGI: ``BaseHTTPMiddleware`` costs a task and a stream per request.
"""

import ipaddress
import re
import time
from collections.abc import Sequence
from uuid import uuid4

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aixiate_core.context import RequestInfo, reset_current_request, set_current_request
from aixiate_core.errors import problem_response
from aixiate_core.metrics import Metrics

log = structlog.get_logger()

# Accept a caller's id only when it is safe to echo into headers and logs.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[IPNetwork]
) -> str | None:
    """The first address, from the right, that a trusted proxy did not add.

    ``X-Forwarded-For`` is believed only hop by hop from our side: a client can write
    anything in it, but only a trusted proxy appends what it actually saw.
    """
    if peer is None or not trusted or not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    address = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address
        address = hop
        if not _is_trusted(hop, trusted):
            return hop
    return address


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class PayloadTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body exceeds the limit of {limit} bytes.")


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.trusted = parse_networks(trusted_proxies)

    def _limited(self, receive: Receive) -> Receive:
        # Counts what is actually read, for chunked bodies that declare no length. The
        # HTTPException passes FastAPI's body parsing untouched and reaches our handler.
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(self.max_body_bytes)
            return message

        return limited_receive

    def _declares_too_much(self, headers: Headers) -> bool:
        declared = headers.get("content-length")
        return declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started_at = time.perf_counter()
        headers = Headers(scope=scope)
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _SANE_REQUEST_ID.match(incoming) else uuid4().hex
        peer = scope["client"][0] if scope.get("client") else None
        ip = client_ip(peer, headers.get("x-forwarded-for"), self.trusted)
        token = set_current_request(RequestInfo(request_id, ip, headers.get("user-agent")))
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(
            request_id=request_id, method=scope["method"], path=scope["path"]
        ):
            try:
                if self._declares_too_much(headers):
                    too_large = PayloadTooLarge(self.max_body_bytes)
                    response = problem_response(
                        Request(scope),
                        status=413,
                        code="payload_too_large",
                        title="Content Too Large",
                        detail=str(too_large.detail),
                    )
                    await response(scope, receive, send_with_id)
                else:
                    await self.app(scope, self._limited(receive), send_with_id)
            except Exception:
                log.exception("http.unhandled_error")
                if not response_started:
                    response = problem_response(
                        Request(scope),
                        status=500,
                        code="internal_error",
                        title="Internal server error",
                        detail="The server failed to complete the request; "
                        "quote the request_id when reporting it.",
                    )
                    await response(scope, receive, send_with_id)
            finally:
                duration = time.perf_counter() - started_at
                template = _route_template(scope, status)
                self.metrics.observe(scope["method"], template, status, duration)
                log.info(
                    "http.request",
                    status=status,
                    route=template,
                    duration_ms=round(duration * 1000, 2),
                    client_ip=ip,
                )
                reset_current_request(token)


def _route_template(scope: Scope, status: int) -> str:
    # Label metrics by template ("/users/{id}"), never by raw path: a client could
    # otherwise mint a new time series per request. Only the docs pages answer 2xx
    # without a routing template, and their paths are fixed.
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    return scope["path"] if 200 <= status < 300 else "<unmatched>"
