from datetime import datetime

from aixiate_core.db import create_sessionmaker
from aixiate_core.housekeeping import Housekeeper
from aixiate_core.settings import Settings
from aixiate_core.store import KeyValueStore
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession


class TestHousekeeper:
    async def test_runs_every_job_once_per_round_across_processes(
        self, engine: AsyncEngine, store: KeyValueStore, settings: Settings
    ) -> None:
        calls: list[str] = []

        async def job(_: AsyncSession, __: datetime) -> int:
            calls.append("ran")
            return 3

        def keeper() -> Housekeeper:
            return Housekeeper(
                sessionmaker=create_sessionmaker(engine),
                store=store,
                settings=settings,
                jobs={"things": job},
            )

        first, second = keeper(), keeper()
        assert await first.run_once() == {"things": 3}
        # Another process in the same round finds the lock taken and does nothing.
        assert await second.run_once() is None
        assert calls == ["ran"]

    async def test_a_failing_job_does_not_stop_the_others(
        self, engine: AsyncEngine, store: KeyValueStore, settings: Settings
    ) -> None:
        async def broken(_: AsyncSession, __: datetime) -> int:
            raise RuntimeError("boom")

        async def fine(_: AsyncSession, __: datetime) -> int:
            return 1

        keeper = Housekeeper(
            sessionmaker=create_sessionmaker(engine),
            store=store,
            settings=settings,
            jobs={"broken": broken, "fine": fine},
        )
        assert await keeper.run_once() == {"fine": 1}
