"""Periodic purges of what has outlived its use (expired sessions and tokens, sent email).

Every API process and every ``aixiate worker`` runs the loop; a lock in the shared store,
held for most of an interval, lets one of them do each round. Each package brings its
own purge job; the service registers them.
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_core.db import utc_now
from aixiate_core.settings import Settings
from aixiate_core.store import KeyValueStore

log = structlog.get_logger()

#: Deletes what is stale at ``now``; returns how many rows went.
PurgeJob = Callable[[AsyncSession, datetime], Awaitable[int]]

_LOCK_KEY = "housekeeping:lock"


class Housekeeper:
    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        store: KeyValueStore,
        settings: Settings,
        jobs: Mapping[str, PurgeJob],
    ) -> None:
        self.sessionmaker = sessionmaker
        self.store = store
        self.interval = settings.housekeeping_interval_seconds
        self.jobs = dict(jobs)

    async def run_once(self, now: datetime | None = None) -> dict[str, int] | None:
        """Runs every job unless another process holds this round; None when skipped."""
        if not await self.store.set_if_absent(_LOCK_KEY, b"1", ttl=self.interval * 0.9):
            return None
        now = now or utc_now()
        purged: dict[str, int] = {}
        for name, job in self.jobs.items():
            try:
                async with self.sessionmaker() as session, session.begin():
                    purged[name] = await job(session, now)
            except Exception:
                log.exception("housekeeping.job_failed", job=name)
        log.info("housekeeping.done", **purged)
        return purged

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("housekeeping.failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
            except TimeoutError:
                continue
