import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aixiate_api import migrations
from aixiate_api.app import create_app
from aixiate_auth.settings import AuthSettings
from aixiate_auth.testing import expose_auth_state
from aixiate_core.settings import Settings
from aixiate_core.testing import (
    RUN_ID,
    RUN_SECRET,
    create_database,
    drop_database,
    free_port,
    redis_server_url,
)
from aixiate_users.testing import fast_users_settings
from fastapi import FastAPI
from pydantic import SecretStr
from redis import Redis as SyncRedis

type ServiceFactory = Callable[..., FastAPI]


def inspectable_service(
    settings: Settings, auth_settings: AuthSettings | None = None, **users_overrides: Any
) -> FastAPI:
    """``create_app`` with cheap argon2 (``users_overrides`` change the users settings),
    whose started ``AuthState`` is also on ``app.state.auth`` for the test to look into."""
    started: list[FastAPI] = []
    app = create_app(
        settings,
        auth_settings or AuthSettings(_env_file=None),
        fast_users_settings(**users_overrides),
        extensions=[expose_auth_state(started)],
    )
    started.append(app)
    return app


@pytest.fixture
def make_service() -> ServiceFactory:
    """``make_service(settings, auth_settings=None, **users_overrides)``: the assembled
    service in process; see :func:`inspectable_service`."""
    return inspectable_service


@pytest.fixture(scope="session")
def database_schema(database_url: str) -> str:
    """End-to-end tests run on the migrated schema, exactly as deployed."""
    migrations.upgrade_url(database_url)
    return database_url


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """A database of its own with nothing in it, for tests that migrate up and down."""
    # Sync: the migration tests run their own event loops.
    url = asyncio.run(create_database(tmp_path, "aixiate_empty"))
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))


# --- the real service in processes of their own --------------------------------------------

#: Cheap argon2 and no email delivery: the processes under test serve HTTP, nothing else.
SERVICE_ENV = {
    "AIXIATE_ENV": "test",
    "AIXIATE_ARGON2_TIME_COST": "1",
    "AIXIATE_ARGON2_MEMORY_KIB": "1024",
    "AIXIATE_REQUIRE_EMAIL_VERIFICATION": "false",
    "AIXIATE_OUTBOX_DISPATCHER_ENABLED": "false",
}
STARTUP_SECONDS = 60.0
SHUTDOWN_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class ServiceProcess:
    name: str
    url: str
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


type RunCommand = Callable[..., subprocess.CompletedProcess[str]]


def service_environment(settings: Settings) -> dict[str, str]:
    """The settings' database, Redis (when configured) and secret key, so the processes
    and the test share one state; nothing from the caller's own AIXIATE_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIXIATE_")}
    env.update(SERVICE_ENV)
    env["AIXIATE_DATABASE_URL"] = settings.database_url
    env["AIXIATE_SECRET_KEY"] = settings.secret()
    if settings.redis_url:
        env["AIXIATE_REDIS_URL"] = settings.redis_url
        env["AIXIATE_REDIS_KEY_PREFIX"] = settings.redis_key_prefix
    return env


def _ready(url: str, process: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling another process: there is nothing to await
    return False


@contextmanager
def running_services(
    settings: Settings,
    names: tuple[str, ...],
    workdir: Path,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[dict[str, ServiceProcess]]:
    """``python -m aixiate_api serve`` once per name, started side by side, until the block
    ends; every process is terminated (killed if it hangs) whatever happens. ``extra_env``
    adds or overrides variables (``AIXIATE_*`` settings of the processes)."""
    env = service_environment(settings) | dict(extra_env or {})
    processes: list[subprocess.Popen[bytes]] = []
    services: dict[str, ServiceProcess] = {}
    try:
        for name in names:
            port = free_port()
            log = workdir / f"{name}.log"
            # Each process knows its own public address (OAuth callbacks are built on it).
            own_env = {"AIXIATE_API_URL": f"http://127.0.0.1:{port}"} | env
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(  # noqa: S603 - our own command line
                        [sys.executable, "-m", "aixiate_api", "serve", "--port", str(port)],
                        cwd=workdir,  # no stray .env from the checkout
                        env=own_env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
            services[name] = ServiceProcess(name, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + STARTUP_SECONDS
        for process, service in zip(processes, services.values(), strict=True):
            assert _ready(service.url, process, deadline), (
                f"{service.name} did not become ready:\n{service.log_tail()}"
            )
        yield services
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=SHUTDOWN_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=SHUTDOWN_SECONDS)


@pytest.fixture(scope="module")
def service_settings(database_schema: str) -> Iterator[Settings]:
    """Settings the service processes of one test module share: the run's migrated
    database and secret key, and a Redis prefix of the module's own."""
    settings = Settings(
        env="test",
        database_url=database_schema,
        redis_url=redis_server_url(),
        redis_key_prefix=f"aixiate-test:{RUN_ID}:{uuid.uuid4().hex[:8]}:",
        secret_key=SecretStr(RUN_SECRET),
        _env_file=None,
    )
    yield settings
    if settings.redis_url:
        client = SyncRedis.from_url(settings.redis_url)
        try:
            keys = list(client.scan_iter(match=settings.redis_key_prefix + "*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.fixture(scope="module")
def service_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service")


@pytest.fixture
def aixiate_command(service_settings: Settings, tmp_path: Path) -> RunCommand:
    """``aixiate_command(*args, input=None)``: the ``aixiate`` command line, run as an
    operator would, against the same database and secret key as the service processes."""

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own command line
            [sys.executable, "-m", "aixiate_api", *args],
            input=input,
            cwd=tmp_path,
            env=service_environment(service_settings),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


@pytest.fixture(scope="module")
def service_extra_env() -> dict[str, str]:
    """Settings of the service processes beyond the shared ones; a test module overrides
    this fixture to run its processes with settings of its own."""
    return {}


@pytest.fixture(scope="module")
def service_url(
    service_settings: Settings, service_workdir: Path, service_extra_env: dict[str, str]
) -> Iterator[str]:
    """The base URL of one service process, shared by the tests of a module."""
    names = ("aixiate",)
    with running_services(service_settings, names, service_workdir, service_extra_env) as services:
        yield services["aixiate"].url


@pytest.fixture(scope="module")
def two_service_urls(
    service_settings: Settings, service_workdir: Path, service_extra_env: dict[str, str]
) -> Iterator[list[str]]:
    """Two service processes on one database and Redis, shared by the tests of a module."""
    with running_services(
        service_settings, ("a", "b"), service_workdir, service_extra_env
    ) as services:
        yield [service.url for service in services.values()]


@pytest.fixture
async def clients(two_service_urls: list[str]) -> AsyncIterator[list[httpx.AsyncClient]]:
    """A client of each of the two service processes."""
    first, second = two_service_urls
    async with (
        httpx.AsyncClient(base_url=first, timeout=10) as a,
        httpx.AsyncClient(base_url=second, timeout=10) as b,
    ):
        yield [a, b]
