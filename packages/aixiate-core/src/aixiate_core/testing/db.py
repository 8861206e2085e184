"""The backends a test run uses, and databases and keys of a test's own on them.

Which backends comes from the environment:

- ``AIXIATE_TEST_DATABASE_URL``: a PostgreSQL server URL to administer; databases are
  created on it and dropped afterwards. Unset: SQLite files in temp directories.
- ``AIXIATE_TEST_REDIS_URL``: a Redis server; tests use key prefixes of their own and
  delete their keys afterwards. Unset: the in-process store.
"""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy import inspect, make_url
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

#: What a test opens its own sessions on the app's database with (the ``db`` fixtures).
type Sessions = async_sessionmaker[AsyncSession]


def postgres_server_url() -> str | None:
    return os.environ.get("AIXIATE_TEST_DATABASE_URL") or None


def redis_server_url() -> str | None:
    return os.environ.get("AIXIATE_TEST_REDIS_URL") or None


async def _autocommit(url: str, statement: str) -> None:
    # CREATE and DROP DATABASE refuse to run inside a transaction.
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def create_database(directory: Path, prefix: str = "aixiate_scratch") -> str:
    """The URL of a new, empty database named ``<prefix>_<random>``: on the PostgreSQL
    server when the run has one, else a SQLite file in ``directory``."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    server = postgres_server_url()
    if server is None:
        return f"sqlite+aiosqlite:///{directory / f'{name}.db'}"
    await _autocommit(server, f'CREATE DATABASE "{name}"')
    return make_url(server).set(database=name).render_as_string(hide_password=False)


async def drop_database(url: str) -> None:
    """Drops a database :func:`create_database` made, even with connections still open;
    a SQLite file goes with its temp directory."""
    server = postgres_server_url()
    if server is None or make_url(url).get_backend_name() == "sqlite":
        return
    name = make_url(url).database
    await _autocommit(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def scratch_database(directory: Path, prefix: str = "aixiate_scratch") -> AsyncIterator[str]:
    """A database of the block's own, empty at the start and dropped at the end. Sync
    fixtures (whose tests run their own event loops) call the two halves with
    ``asyncio.run`` instead."""
    url = await create_database(directory, prefix)
    try:
        yield url
    finally:
        await drop_database(url)


async def table_names(url: str) -> list[str]:
    """The tables of the database at ``url``, as it is now."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await engine.dispose()


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


async def delete_prefixed(client: Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
    if keys:
        await client.delete(*keys)


async def forget_prefixed(redis_url: str | None, prefix: str) -> None:
    """Deletes the keys under ``prefix`` on the Redis at ``redis_url`` (None: nothing to do),
    with a client of its own: the apps that wrote them may be gone."""
    if redis_url is None:
        return
    client = Redis.from_url(redis_url)
    try:
        await delete_prefixed(client, prefix)
    finally:
        await client.aclose()
