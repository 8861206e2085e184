"""Alembic environment: async, every package's models, batch mode on SQLite.

The URL comes from the config attribute set by ``aixiate db upgrade`` or, when run by
hand, from the service settings (AIXIATE_DATABASE_URL).
"""

import asyncio
import re
from typing import Literal

from aixiate_api.models import load_all
from aixiate_core.db import UTCDateTime
from aixiate_core.settings import get_settings
from alembic import context
from alembic.autogenerate.api import AutogenContext
from alembic.runtime.environment import IncludeObjectFn as IncludeObject
from sqlalchemy import JSON, Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel.sql.sqltypes import AutoString

config = context.config
target_metadata = load_all().metadata


def _url() -> str:
    url = config.attributes.get("database_url")
    return str(url) if url else get_settings().database_url


def _render_item(type_: str, obj: object, ctx: AutogenContext) -> str | Literal[False]:
    # Migrations stay static: render our column types as the plain SQLAlchemy types they
    # store, so no revision imports package code that may change later.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, JSON) and "postgresql" in obj._variant_mapping:
        # Alembic renders the variant's astext_type as a bare Text() (NameError).
        ctx.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    if type_ == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    return False


# The monthly and default partitions of audit_event on PostgreSQL are created by migrations and
# housekeeping, not by models: autogenerate must neither drop nor compare them.
_AUDIT_PARTITION = re.compile(r"^audit_event_(p\d{6}|default)$")


def _include_object_for(dialect: str) -> IncludeObject:
    def include(
        obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
    ) -> bool:
        if type_ == "table" and name and _AUDIT_PARTITION.match(name):
            return False
        # Unique on SQLite; on PostgreSQL a unique index on a table partitioned by
        # occurred_at must include it, so there it is a plain index (see the migration).
        return not (dialect == "postgresql" and type_ == "index" and name == "ix_audit_event_seq")

    return include


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_item=_render_item,
        include_object=_include_object_for(connection.dialect.name),
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


def run_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_item=_render_item,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=_url().startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (connection := config.attributes.get("connection")) is not None:
    _run_sync(connection)
else:
    asyncio.run(_run_async())
