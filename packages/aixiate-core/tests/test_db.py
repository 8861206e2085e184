import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from aixiate_core.db import (
    SessionDep,
    UTCDateTime,
    create_engine,
    create_sessionmaker,
    end_read,
    own_transaction,
)
from aixiate_core.errors import Conflict
from aixiate_core.settings import Settings
from aixiate_core.testing import postgres_server_url, serve
from fastapi import APIRouter, FastAPI
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

type AppFactory = Callable[[Settings, APIRouter], FastAPI]


@pytest.fixture(params=["run", "sqlite"])
async def any_engine(
    request: pytest.FixtureRequest, engine: AsyncEngine, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    """The run's database (PostgreSQL when configured), and always SQLite too."""
    if request.param == "run":
        yield engine
        return
    sqlite = create_engine(
        Settings(_env_file=None, env="test", database_url=f"sqlite+aiosqlite:///{tmp_path}/t.db")
    )
    yield sqlite
    await sqlite.dispose()


class TestUTCDateTime:
    @pytest.fixture
    def probe(self) -> Table:
        return Table(
            f"utc_probe_{uuid4().hex[:8]}",
            MetaData(),
            Column("id", Integer, primary_key=True),
            Column("at", UTCDateTime, nullable=True),
        )

    async def test_reads_back_aware_utc(self, any_engine: AsyncEngine, probe: Table) -> None:
        written = datetime(2025, 3, 30, 2, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))

        async with any_engine.connect() as conn, conn.begin() as tx:
            await conn.run_sync(probe.metadata.create_all)
            await conn.execute(insert(probe).values(id=1, at=written))
            read = await conn.scalar(select(probe.c.at).where(probe.c.id == 1))
            await tx.rollback()

        assert isinstance(read, datetime)
        assert read.tzinfo is UTC
        assert read == written
        assert read.hour == 0  # 02:30 at +02:00 is 00:30 UTC

    async def test_compares_instants_across_offsets(
        self, any_engine: AsyncEngine, probe: Table
    ) -> None:
        # 10:00 at -05:00 is later than 12:00 at +00:00; a store that kept local wall
        # times (SQLite) would order them the other way round.
        earlier = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
        later = datetime(2025, 1, 1, 10, 0, tzinfo=timezone(timedelta(hours=-5)))
        cutoff = datetime(2025, 1, 1, 13, 0, tzinfo=UTC)

        async with any_engine.connect() as conn, conn.begin() as tx:
            await conn.run_sync(probe.metadata.create_all)
            await conn.execute(insert(probe), [{"id": 1, "at": earlier}, {"id": 2, "at": later}])
            after_cutoff = (await conn.scalars(select(probe.c.id).where(probe.c.at > cutoff))).all()
            await tx.rollback()

        assert after_cutoff == [2]

    async def test_null_round_trips(self, any_engine: AsyncEngine, probe: Table) -> None:
        async with any_engine.connect() as conn, conn.begin() as tx:
            await conn.run_sync(probe.metadata.create_all)
            await conn.execute(insert(probe).values(id=1, at=None))
            read = await conn.scalar(select(probe.c.at).where(probe.c.id == 1))
            await tx.rollback()

        assert read is None

    async def test_rejects_naive_datetime(self, any_engine: AsyncEngine, probe: Table) -> None:
        async with any_engine.connect() as conn, conn.begin() as tx:
            await conn.run_sync(probe.metadata.create_all)
            with pytest.raises(StatementError) as caught:
                await conn.execute(insert(probe).values(id=1, at=datetime(2025, 1, 1)))
            await tx.rollback()

        assert isinstance(caught.value.orig, ValueError)
        assert "naive" in str(caught.value.orig)


@dataclass(frozen=True)
class Tables:
    notes: Table
    parents: Table
    children: Table


@pytest.fixture
async def tables(engine: AsyncEngine) -> AsyncIterator[Tables]:
    """Committed tables of this test's own, since the app under test uses its own engine."""
    suffix = uuid4().hex[:8]
    metadata = MetaData()
    parents = Table(f"parent_{suffix}", metadata, Column("id", Integer, primary_key=True))
    made = Tables(
        notes=Table(
            f"note_{suffix}",
            metadata,
            Column("id", Integer, primary_key=True),
            Column("text", String(50), nullable=False),
        ),
        parents=parents,
        children=Table(
            f"child_{suffix}",
            metadata,
            Column("id", Integer, primary_key=True),
            # Checked at COMMIT, not at INSERT: the flush succeeds and the commit fails.
            Column(
                "parent_id",
                Integer,
                ForeignKey(parents.c.id, deferrable=True, initially="DEFERRED"),
                nullable=False,
            ),
        ),
    )
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield made
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)


async def count(engine: AsyncEngine, table: Table) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


def unit_of_work_routes(tables: Tables) -> APIRouter:
    router = APIRouter()

    @router.post("/notes", status_code=201)
    async def add_note(session: SessionDep) -> dict[str, bool]:
        conn = await session.connection()
        await conn.execute(insert(tables.notes).values(text="kept"))
        return {"ok": True}

    @router.post("/notes/conflict")
    async def add_note_then_conflict(session: SessionDep) -> dict[str, bool]:
        conn = await session.connection()
        await conn.execute(insert(tables.notes).values(text="rolled back"))
        raise Conflict("changed my mind")

    @router.post("/notes/crash")
    async def add_note_then_crash(session: SessionDep) -> dict[str, bool]:
        conn = await session.connection()
        await conn.execute(insert(tables.notes).values(text="rolled back"))
        raise RuntimeError("bug after a write")

    @router.post("/orphans", status_code=201)
    async def add_orphan(session: SessionDep) -> dict[str, bool]:
        conn = await session.connection()
        await conn.execute(insert(tables.children).values(parent_id=404))
        await conn.execute(insert(tables.notes).values(text="with the orphan"))
        return {"ok": True}

    return router


class RecordResponseStart:
    """Wraps an ASGI app to note, in ``events``, when the response starts going out."""

    def __init__(self, app: ASGIApp, events: list[str]) -> None:
        self.app = app
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def noting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.events.append("response")
            await send(message)

        await self.app(scope, receive, noting_send)


class TestGetSession:
    @pytest.mark.parametrize(
        ("path", "status", "notes"),
        [("/notes", 201, 1), ("/notes/conflict", 409, 0), ("/notes/crash", 500, 0)],
        ids=["commits_on_success", "rolls_back_on_domain_error", "rolls_back_on_unexpected_error"],
    )
    async def test_commits_only_on_success(
        self,
        make_app: AppFactory,
        settings: Settings,
        tables: Tables,
        engine: AsyncEngine,
        path: str,
        status: int,
        notes: int,
    ) -> None:
        app = make_app(settings, unit_of_work_routes(tables))

        async with serve(app) as client:
            response = await client.post(path)

        assert response.status_code == status
        assert await count(engine, tables.notes) == notes

    async def test_commits_before_the_response_starts(
        self, make_app: AppFactory, settings: Settings, tables: Tables
    ) -> None:
        events: list[str] = []

        def on_commit(_: object) -> None:
            events.append("commit")

        app = make_app(settings, unit_of_work_routes(tables))
        event.listen(Engine, "commit", on_commit)
        try:
            async with serve(RecordResponseStart(app, events)) as client:
                response = await client.post("/notes")
        finally:
            event.remove(Engine, "commit", on_commit)

        assert response.status_code == 201
        assert events == ["commit", "response"]

    async def test_failed_commit_is_not_reported_as_success(
        self, make_app: AppFactory, settings: Settings, tables: Tables, engine: AsyncEngine
    ) -> None:
        app = make_app(settings, unit_of_work_routes(tables))

        async with serve(app) as client:
            response = await client.post("/orphans")

        assert response.status_code == 500
        assert response.json()["code"] == "internal_error"
        assert await count(engine, tables.children) == 0
        assert await count(engine, tables.notes) == 0


@pytest.mark.skipif(
    postgres_server_url() is None,
    reason="the pool pings only network databases; set AIXIATE_TEST_DATABASE_URL",
)
class TestIdlePing:
    """Pooled connections are tested before use only after sitting idle."""

    @staticmethod
    def engine_for(settings: Settings, idle_seconds: float) -> AsyncEngine:
        return create_engine(
            settings.model_copy(
                update={
                    "database_pool_size": 1,
                    "database_pool_pre_ping_idle_seconds": idle_seconds,
                }
            )
        )

    @staticmethod
    def count_pings(engine: AsyncEngine) -> list[object]:
        pings: list[object] = []
        dialect = engine.sync_engine.dialect
        original = dialect.do_ping

        def counting(dbapi_connection: Any) -> bool:
            pings.append(dbapi_connection)
            return original(dbapi_connection)

        dialect.do_ping = counting  # type: ignore[method-assign]
        return pings

    @staticmethod
    async def backend_pid(engine: AsyncEngine) -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())

    async def test_a_connection_in_steady_use_is_not_pinged(self, settings: Settings) -> None:
        engine = self.engine_for(settings, idle_seconds=60)
        pings = self.count_pings(engine)
        try:
            pids = {await self.backend_pid(engine) for _ in range(5)}
        finally:
            await engine.dispose()

        assert len(pids) == 1  # the same pooled connection every time
        assert pings == []

    async def test_an_idle_connection_that_died_is_replaced_unseen(
        self, settings: Settings, engine: AsyncEngine
    ) -> None:
        pooled = self.engine_for(settings, idle_seconds=0)
        pings = self.count_pings(pooled)
        try:
            first = await self.backend_pid(pooled)
            # The server ends the pooled connection while it is idle (a restart would).
            async with engine.connect() as admin:
                await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})

            second = await self.backend_pid(pooled)
        finally:
            await pooled.dispose()

        assert second != first
        assert len(pings) == 1


class TestConcurrentReadThenWrite:
    """Transactions that read and then write, overlapping: on SQLite each must wait its
    turn, not fail with "database is locked" because another committed in between."""

    async def test_all_overlapping_read_then_write_transactions_commit(
        self, any_engine: AsyncEngine
    ) -> None:
        metadata = MetaData()
        counter = Table(
            f"counter_{uuid4().hex[:8]}",
            metadata,
            Column("id", Integer, primary_key=True),
            Column("value", Integer, nullable=False),
        )
        async with any_engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(insert(counter).values(id=1, value=0))
        both_read = asyncio.Barrier(2)

        async def increment() -> None:
            async with any_engine.begin() as conn:
                value = (await conn.execute(select(counter.c.value))).scalar_one()
                # On PostgreSQL the second reader waits at its UPDATE for the first to
                # commit; the barrier must not then wait for a reader that never comes.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await both_read.wait()
                await conn.execute(counter.update().values(value=value + 1))

        try:
            await asyncio.gather(increment(), increment())
            async with any_engine.connect() as conn:
                final = (await conn.execute(select(counter.c.value))).scalar_one()
        finally:
            async with any_engine.begin() as conn:
                await conn.run_sync(metadata.drop_all)

        # PostgreSQL (read committed) may lose an update here; SQLite, serialized, cannot.
        assert final in ((1, 2) if any_engine.dialect.name == "postgresql" else (2,))


def impatient_sqlite(tmp_path: Path) -> tuple[Settings, MetaData, Table]:
    """A SQLite file that waits 0.2 s for its write lock, and a table to write to."""
    settings = Settings(
        _env_file=None,
        env="test",
        database_url=f"sqlite+aiosqlite:///{tmp_path}/impatient.db",
        database_pool_timeout_seconds=0.2,
    )
    metadata = MetaData()
    return settings, metadata, Table("note", metadata, Column("id", Integer, primary_key=True))


class TestSQLiteContention:
    async def test_a_write_lock_held_past_the_busy_timeout_answers_503(
        self, make_app: AppFactory, tmp_path: Path
    ) -> None:
        settings, metadata, notes = impatient_sqlite(tmp_path)
        router = APIRouter()

        @router.post("/notes", status_code=201)
        async def add_note(session: SessionDep) -> dict[str, bool]:
            conn = await session.connection()
            await conn.execute(insert(notes))
            return {"ok": True}

        engine = create_engine(settings)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            async with engine.connect() as holder, holder.begin():
                # Another writer keeps SQLite's one write lock past the busy timeout.
                await holder.execute(select(func.count()).select_from(notes))
                async with serve(make_app(settings, router)) as client:
                    response = await client.post("/notes")
            async with engine.connect() as conn:
                stored = (await conn.execute(select(func.count()).select_from(notes))).scalar()
        finally:
            await engine.dispose()

        assert response.status_code == 503, response.text
        assert response.json()["code"] == "service_unavailable"
        assert response.headers["retry-after"] == "5"
        assert stored == 0


class TestSideTransactions:
    async def test_end_read_releases_sqlites_write_lock(self, tmp_path: Path) -> None:
        # On SQLite every transaction begins IMMEDIATE, so a read holds the write lock
        # until it ends: end_read is what lets another writer in before slow work.
        settings, metadata, notes = impatient_sqlite(tmp_path)
        engine = create_engine(settings)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            async with create_sessionmaker(engine)() as reader:
                await (await reader.connection()).execute(select(func.count()).select_from(notes))

                await end_read(reader)

                async with engine.begin() as writer:  # would wait past the busy timeout
                    await writer.execute(insert(notes))
        finally:
            await engine.dispose()

    async def test_end_read_refuses_a_session_with_pending_changes(
        self, engine: AsyncEngine, tables: Tables
    ) -> None:
        async with create_sessionmaker(engine)() as session:
            session.add(Note(text="pending"))

            with pytest.raises(RuntimeError, match="pending changes"):
                await end_read(session)

    async def test_own_transaction_commits_though_the_request_rolls_back(
        self, engine: AsyncEngine, tables: Tables
    ) -> None:
        # The order a failing request follows: its own work rolls back first (on SQLite
        # both would wait on the one write lock), then the side transaction commits.
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as request:
            await (await request.connection()).execute(insert(tables.notes).values(text="no"))
            await request.rollback()

            async with own_transaction(sessionmaker) as own:
                await (await own.connection()).execute(insert(tables.notes).values(text="kept"))

        async with engine.connect() as conn:
            texts = (await conn.execute(select(tables.notes.c.text))).scalars().all()
        assert texts == ["kept"]

    async def test_own_transaction_rolls_back_on_error(
        self, engine: AsyncEngine, tables: Tables
    ) -> None:
        async def fail_after_writing() -> None:
            async with own_transaction(create_sessionmaker(engine)) as own:
                await (await own.connection()).execute(insert(tables.notes).values(text="lost"))
                raise Conflict()

        with pytest.raises(Conflict):
            await fail_after_writing()

        assert await count(engine, tables.notes) == 0


class Note(SQLModel, table=True):
    """A mapped row, for a session with pending ORM changes."""

    __tablename__ = "test_db_pending_note"

    id: int | None = SQLField(default=None, primary_key=True)
    text: str
