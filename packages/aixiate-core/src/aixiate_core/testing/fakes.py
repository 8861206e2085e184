"""Stand-ins for the third parties the service talks to over HTTP."""

import asyncio
import json
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from pydantic import SecretStr

from aixiate_core.settings import Settings


@dataclass(frozen=True, slots=True)
class ResendCall:
    """One request the fake received; ``headers`` are keyed in lower case."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    status: int
    #: A repeated Idempotency-Key: answered like the first time, delivered no second time.
    replayed: bool = False


class FakeResend:
    """A local stand-in for Resend's HTTP API on 127.0.0.1, served from a thread.

    It records every request, answers ``POST /emails`` like Resend does (200 and an
    ``id``), and can be told to fail the next requests, to exercise retry decisions.
    Point a sender at :attr:`url`; use it as a context manager (or the ``fake_resend``
    fixture) so the server is always shut down.
    """

    # Resend's error names per status, so the SDK maps them to its own exceptions.
    _ERROR_NAMES: ClassVar[dict[int, str]] = {
        400: "validation_error",
        401: "missing_api_key",
        403: "invalid_api_key",
        422: "validation_error",
        429: "rate_limit_exceeded",
        500: "application_error",
    }

    def __init__(self) -> None:
        self.calls: list[ResendCall] = []
        self._failures: list[int] = []
        self._accepted: dict[str, str] = {}
        self._hold_countdown: int | None = None
        self._held = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def emails(self) -> list[dict[str, Any]]:
        """The bodies of the messages that were accepted."""
        with self._lock:
            return [call.body for call in self._delivered()]

    @property
    def delivered_keys(self) -> list[str]:
        """Idempotency keys of the messages delivered, one entry per delivery."""
        with self._lock:
            return [call.headers.get("idempotency-key", "") for call in self._delivered()]

    def _delivered(self) -> list[ResendCall]:
        return [
            call
            for call in self.calls
            if call.path == "/emails" and call.status == 200 and not call.replayed
        ]

    def sending(self, settings: Settings) -> Settings:
        """``settings`` with the outbox dispatcher on, polling briskly, and delivering here."""
        return settings.model_copy(
            update={
                "outbox_dispatcher_enabled": True,
                "outbox_poll_seconds": 0.05,
                "resend_api_key": SecretStr("re_test_key"),
                "resend_base_url": self.url,
            }
        )

    def hold_after(self, count: int) -> None:
        """The ``count``-th next message is accepted, but its answer is held back until
        :meth:`release`: a client that dies meanwhile never learns it was delivered."""
        with self._lock:
            self._hold_countdown = count
            self._held.clear()
            self._released.clear()

    async def wait_for_held(self) -> None:
        if not await asyncio.to_thread(self._held.wait, 30.0):
            raise TimeoutError("no request was held")

    def release(self) -> None:
        self._released.set()

    def fail_next(self, count: int = 1, *, status: int = 500) -> None:
        """Answers the next ``count`` requests with ``status`` and a Resend error body."""
        with self._lock:
            self._failures.extend([status] * count)

    def start(self) -> None:
        # A short poll interval: shutdown() waits for the loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="fake-resend",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "FakeResend":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _answer(
        self, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, str, bool]:
        """Status, message id, and whether to hold the answer back."""
        with self._lock:
            default = 200 if path == "/emails" else 404
            status = self._failures.pop(0) if self._failures else default
            key = headers.get("idempotency-key")
            replayed = status == 200 and key is not None and key in self._accepted
            message_id = self._accepted.get(key or "", "") or str(uuid.uuid4())
            if status == 200 and key is not None:
                self._accepted[key] = message_id
            self.calls.append(ResendCall(path, body, headers, status, replayed))
            hold = False
            if self._hold_countdown is not None and path == "/emails":
                self._hold_countdown -= 1
                hold = self._hold_countdown == 0
                if hold:
                    self._hold_countdown = None
        return status, message_id, hold

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                headers = {name.lower(): value for name, value in self.headers.items()}
                status, message_id, hold = fake._answer(self.path, body, headers)
                if hold:
                    fake._held.set()
                    fake._released.wait(30)
                if status == 200:
                    answer: dict[str, Any] = {"id": message_id}
                else:
                    answer = {
                        "statusCode": status,
                        "name": fake._ERROR_NAMES.get(status, "application_error"),
                        "message": f"fake resend answered {status}",
                    }
                payload = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up waiting (see hold_after)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # keep test output clean; the fake records calls instead

        return Handler
