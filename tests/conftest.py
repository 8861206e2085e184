import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aixiate_api import migrations
from aixiate_core.testing import postgres_server_url
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import create_async_engine


@pytest.fixture(scope="session")
def database_schema(database_url: str) -> str:
    """End-to-end tests run on the migrated schema, exactly as deployed."""
    migrations.upgrade_url(database_url)
    return database_url


async def _autocommit(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """A database of its own with nothing in it, for tests that migrate up and down."""
    server = postgres_server_url()
    if server is None:
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"aixiate_empty_{uuid.uuid4().hex[:12]}"
    asyncio.run(_autocommit(server, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_autocommit(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
