"""pytest plugin shared by every package's tests (registered as the ``aixiate`` entry point).

Which backends a run uses comes from the environment:

- ``AIXIATE_TEST_DATABASE_URL``: a PostgreSQL server URL to administer; each run creates
  a fresh database on it and drops it afterwards. Unset: a SQLite file in a temp dir.
- ``AIXIATE_TEST_REDIS_URL``: a Redis server; each run uses its own key prefix and
  deletes its keys afterwards. Unset: the in-process store.
"""

import asyncio
import json
import os
import secrets
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
import structlog
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.types import ASGIApp

from aixiate_core.db import create_engine
from aixiate_core.settings import Settings
from aixiate_core.store import KeyValueStore, MemoryStore, RedisStore

RUN_ID = uuid.uuid4().hex[:12]
RUN_SECRET = secrets.token_urlsafe(48)


def postgres_server_url() -> str | None:
    return os.environ.get("AIXIATE_TEST_DATABASE_URL") or None


def redis_server_url() -> str | None:
    return os.environ.get("AIXIATE_TEST_REDIS_URL") or None


def pytest_configure(config: pytest.Config) -> None:
    # Until a test configures logging itself, render plainly: structlog's default would
    # use rich tracebacks, which print local variables (tokens, passwords) into the log.
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            ),
        ]
    )


def pytest_report_header() -> list[str]:
    database = "postgresql" if postgres_server_url() else "sqlite (embedded)"
    redis = "redis" if redis_server_url() else "in-process store"
    return [f"aixiate backends: database={database}, cache={redis}, run={RUN_ID}"]


async def _admin(url: str, statement: str) -> None:
    admin = make_url(url)
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of this run's own, empty at the start."""
    server = postgres_server_url()
    if server is None:
        path = tmp_path_factory.mktemp("db") / "aixiate.db"
        yield f"sqlite+aiosqlite:///{path}"
        return
    name = f"aixiate_test_{RUN_ID}_{os.getpid()}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def create_schema(url: str) -> None:
    """Builds the tables of every imported model; the service's tests use migrations instead."""

    async def run() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(SQLModel.metadata.create_all)
        finally:
            await engine.dispose()

    asyncio.run(run())


@pytest.fixture(scope="session")
def database_schema(database_url: str) -> str:
    """Override in a conftest to build the schema another way (e.g. Alembic)."""
    create_schema(database_url)
    return database_url


@pytest.fixture
def redis_prefix() -> str:
    return f"aixiate-test:{RUN_ID}:{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def settings(database_schema: str, redis_prefix: str) -> Settings:
    """Test settings on this run's backends; tests derive variants with ``model_copy``.

    Rate limits are off: every test client comes from one address, and a test of
    something else must not trip over them. Tests of the limits turn them on with
    ``model_copy(update={"rate_limit_enabled": True, ...})``. Account lockout stays on.
    """
    return Settings(
        env="test",
        database_url=database_schema,
        redis_url=redis_server_url(),
        redis_key_prefix=redis_prefix,
        log_format="console",
        rate_limit_enabled=False,
        # One key per run: every app of the run can open what another one sealed.
        secret_key=SecretStr(RUN_SECRET),
        _env_file=None,
    )


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session inside a transaction that is rolled back after the test.

    Code under test may commit: with ``create_savepoint`` that only releases a savepoint.
    """
    async with engine.connect() as conn:
        outer = await conn.begin()
        async with AsyncSession(
            bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
        ) as db_session:
            yield db_session
        await outer.rollback()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[KeyValueStore]:
    """The run's key-value store, empty at the start, cleaned up after the test."""
    if settings.redis_url is None:
        memory = MemoryStore()
        yield memory
        await memory.close()
        return
    redis_store = RedisStore.from_settings(settings)
    yield redis_store
    await delete_prefixed(redis_store.client, settings.redis_key_prefix)
    await redis_store.close()


async def delete_prefixed(client: Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
    if keys:
        await client.delete(*keys)


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """Runs the app's lifespan and gives an HTTP client talking to it in-process."""
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, client=("203.0.113.7", 40000)),
            base_url="http://aixiate.test",
        ) as client,
    ):
        yield client


@asynccontextmanager
async def serve_from(app: ASGIApp, *peers: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Like :func:`serve`, with one client per address in ``peers``, all talking to one
    running app: clients behind different IPs, for tests of per-IP behaviour."""
    async with LifespanManager(app) as manager, AsyncExitStack() as stack:
        clients = []
        for peer in peers:
            transport = httpx.ASGITransport(app=manager.app, client=(peer, 40000))
            client = httpx.AsyncClient(transport=transport, base_url="http://aixiate.test")
            clients.append(await stack.enter_async_context(client))
        yield clients


@pytest.fixture
def free_port() -> Callable[[], int]:
    def pick() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            return port

    return pick


class TcpProxy:
    """A TCP relay the test can cut and restore, standing in for a backend going down.

    Stopping closes the listener and every relayed connection, which is what clients
    see when PostgreSQL or Redis stops; the shared servers themselves stay untouched.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()
                self._writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def url_through(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parsed = make_url(url)
    return parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def target_of(url: str, default_port: int) -> tuple[str, int]:
    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or default_port


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


@pytest.fixture
def fake_resend() -> Iterator[FakeResend]:
    with FakeResend() as fake:
        yield fake
