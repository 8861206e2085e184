"""Async database access: engine, one unit of work per request, and table conventions."""

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

import structlog
from fastapi import Depends, Request
from sqlalchemy import DateTime, event, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_core.settings import Settings

log = structlog.get_logger()

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "%(table_name)s_%(column_0_name)s_key",
    "ck": "%(table_name)s_%(constraint_name)s_check",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every database.

    PostgreSQL keeps the offset; SQLite keeps none and hands back naive values, so
    values are stored as UTC and every value read back is tagged UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class TableBase(SQLModel):
    """UUID primary key and creation/update timestamps for every table."""

    id: UUID = Field(default_factory=uuid4, primary_key=True)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(
        default_factory=utc_now,
        sa_type=UTCDateTime,
        nullable=False,
        sa_column_kwargs={"onupdate": utc_now},
    )


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.database_url,
            echo=settings.database_echo,
            connect_args={"timeout": settings.database_pool_timeout_seconds},
        )
        _use_real_sqlite_transactions(engine)
        return engine
    engine = create_async_engine(
        settings.database_url,
        echo=settings.database_echo,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout_seconds,
        pool_recycle=settings.database_pool_recycle_seconds,
        connect_args={"timeout": settings.database_connect_timeout_seconds},
    )
    if settings.database_pool_pre_ping:
        _ping_idle_connections(engine, settings.database_pool_pre_ping_idle_seconds)
    return engine


_IDLE_SINCE = "aixiate_idle_since"


def _ping_idle_connections(engine: AsyncEngine, idle_seconds: float) -> None:
    """SQLAlchemy's ``pool_pre_ping``, for connections idle at least ``idle_seconds``.

    The asyncpg ping is three round trips (BEGIN, an empty query, ROLLBACK), paid on every
    checkout by ``pool_pre_ping``: a login checks out twice, so six of its sixteen round
    trips were pings. A connection handed back moments ago was just proven live; one that
    sat idle through a database restart is what pinging is for. A failed ping makes the
    pool discard the connection and check out another (SQLAlchemy's documented
    ``DisconnectionError`` protocol), so the request never sees the dead one.
    """
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop(_IDLE_SINCE, None)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("the pooled connection failed its ping") from exc


def _use_real_sqlite_transactions(engine: AsyncEngine) -> None:
    # pysqlite defers BEGIN until the first write, which breaks SAVEPOINTs and lets two
    # transactions read the same row before either writes. SQLAlchemy's documented fix:
    # take over transaction control, and emit BEGIN ourselves.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL is a property of the file: set it once. Switching needs an exclusive lock,
        # so connections opened at the same moment on a new file may find another one
        # doing it; that one's switch serves them too.
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() != "wal":
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
            except Exception as exc:
                if "locked" not in str(exc):
                    raise
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE: take the write lock at BEGIN, waiting for it (the busy timeout).
        # A deferred transaction that read before another writer committed can never
        # write: SQLite fails it at once with "database is locked", whatever the
        # timeout. SQLite has one writer anyway; this makes transactions queue for it.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


#: ``session.info`` keys: the shared key-value store of the request, and async callbacks
#: that packages register (from sync ORM events) to run around the commit.
STORE_KEY = "aixiate.store"
BEFORE_COMMIT = "aixiate.before_commit"
AFTER_COMMIT = "aixiate.after_commit"

CommitHook = Callable[[AsyncSession], Awaitable[None]]


def on_commit(
    session: Session | AsyncSession, hook: CommitHook, *, before: bool, after: bool
) -> None:
    """Runs ``hook`` just before and/or just after the request's commit (once each).

    For caches of database rows: dropping an entry before the commit keeps readers from
    trusting it once the change is visible; dropping it again after the commit removes
    what a concurrent reader put back in between.
    """
    for flag, key in ((before, BEFORE_COMMIT), (after, AFTER_COMMIT)):
        if flag:
            hooks: list[CommitHook] = session.info.setdefault(key, [])
            if hook not in hooks:
                hooks.append(hook)


async def commit(session: AsyncSession) -> None:
    """Commits a unit of work with the hooks packages registered around it.

    A failing before-hook aborts the commit (a cache that cannot be invalidated must not
    go stale); a failing after-hook is only logged, since the data is already committed
    and the request must not be reported as failed.
    """
    if not session.in_transaction() and not session.new and not session.dirty:
        return  # nothing was read or written: no round trip, no greenlet switches
    await session.flush()  # so ORM events of the last changes register their hooks
    for hook in session.info.pop(BEFORE_COMMIT, []):
        await hook(session)
    await session.commit()
    for hook in session.info.pop(AFTER_COMMIT, []):
        try:
            await hook(session)
        except Exception:
            log.exception("db.after_commit_hook_failed", hook=getattr(hook, "__name__", "?"))


async def end_read(session: AsyncSession) -> None:
    """Ends the request's read-only transaction before slow work such as hashing a
    password, so that nothing is held meanwhile: a pooled connection on PostgreSQL, the
    write lock on SQLite (whose transactions begin IMMEDIATE). Later statements open a
    new transaction, which the request's unit of work commits as usual.

    Only for a session that has written nothing: committing pending changes here would
    split the request's business transaction in two.
    """
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("end_read() on a session with pending changes")
    await session.commit()


@asynccontextmanager
async def own_transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A transaction beside the request's, for writes that must survive its failure (the
    audit of a refused attempt, a lock and its email, a reuse revocation). End or roll
    back the request's own transaction first where both could wait on one lock."""
    async with sessionmaker() as session, session.begin():
        yield session


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: commits before the response is sent, rolls back on error."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.state.sessionmaker
    async with sessionmaker() as session:
        session.info[STORE_KEY] = request.state.store
        try:
            yield session
            await commit(session)
        except BaseException:
            session.info.pop(BEFORE_COMMIT, None)
            session.info.pop(AFTER_COMMIT, None)
            await session.rollback()
            raise


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    """For read paths that usually need no database (a cache hit): a session only when
    used, where ``SessionDep`` would build and close one on every request."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.state.sessionmaker
    return sessionmaker


SessionMakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]

# scope="function" runs the commit before the response goes out, so a failed commit is
# reported as an error instead of following a 2xx the client already received.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
