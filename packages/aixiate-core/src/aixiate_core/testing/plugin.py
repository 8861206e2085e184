"""The pytest plugin shared by every package's tests (the ``aixiate`` entry point).

Hooks and fixtures only; the helpers live beside it in :mod:`aixiate_core.testing`. Which
backends a run uses comes from the environment (:mod:`aixiate_core.testing.db`). pytest
imports this before any conftest in every package's run, so it imports no module that
defines tables: ``create_schema`` builds the tables of whatever models are imported.
"""

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import structlog
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_core.db import create_engine
from aixiate_core.settings import Settings
from aixiate_core.store import KeyValueStore, MemoryStore, RedisStore
from aixiate_core.testing import network
from aixiate_core.testing.db import (
    create_database,
    create_schema,
    delete_prefixed,
    drop_database,
    forget_prefixed,
    postgres_server_url,
    redis_server_url,
)
from aixiate_core.testing.fakes import FakeResend
from aixiate_core.testing.http import serve

RUN_ID = uuid.uuid4().hex[:12]
RUN_SECRET = secrets.token_urlsafe(48)


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


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of this run's own, empty at the start."""
    directory = tmp_path_factory.mktemp("db")
    url = asyncio.run(create_database(directory, f"aixiate_test_{RUN_ID}_{os.getpid()}"))
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))


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


@pytest.fixture
async def forget_redis(settings: Settings) -> AsyncIterator[None]:
    """Deletes the keys the test's apps left in Redis under its prefix (rate-limit counters,
    lockout state) after the test; a module of such tests uses it throughout with
    ``pytestmark = pytest.mark.usefixtures("forget_redis")``."""
    yield
    await forget_prefixed(settings.redis_url, settings.redis_key_prefix)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running ``app``: a fixture each suite that uses this defines."""
    async with serve(app) as http:
        yield http


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """Picks a port nothing listens on, for each call."""
    return network.free_port


@pytest.fixture
def fake_resend() -> Iterator[FakeResend]:
    with FakeResend() as fake:
        yield fake
