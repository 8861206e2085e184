"""What the app holds while it runs, built in the lifespan and torn down after it."""

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TypedDict

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_core.db import create_engine, create_sessionmaker
from aixiate_core.email import EmailSender, create_email_sender
from aixiate_core.email_templates import EmailTemplates
from aixiate_core.events import DomainEvents
from aixiate_core.housekeeping import Housekeeper, PurgeJob
from aixiate_core.outbox import Outbox, OutboxDispatcher
from aixiate_core.ratelimit import RateLimiter
from aixiate_core.settings import Settings
from aixiate_core.store import KeyValueStore, create_store


class State(TypedDict):
    """Lifespan state; Starlette copies it into every ``request.state``."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    store: KeyValueStore
    email_sender: EmailSender
    outbox: Outbox
    limiter: RateLimiter


@asynccontextmanager
async def open_resources(
    settings: Settings, *, emails: EmailTemplates | None = None
) -> AsyncIterator[State]:
    """``emails``: the templates of every email the app sends; processes that send none
    (the worker only delivers what was queued) leave it out."""
    engine = create_engine(settings)
    store = create_store(settings)
    limiter = RateLimiter.from_settings(settings, store)
    try:
        yield State(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            store=store,
            email_sender=create_email_sender(settings),
            outbox=Outbox(settings, emails),
            limiter=limiter,
        )
    finally:
        await limiter.close()
        await store.close()
        await engine.dispose()


def build_dispatcher(state: State, events: DomainEvents) -> OutboxDispatcher:
    return OutboxDispatcher(
        sessionmaker=state["sessionmaker"],
        sender=state["email_sender"],
        outbox=state["outbox"],
        settings=state["settings"],
        events=events,
    )


@asynccontextmanager
async def running_background(
    state: State, events: DomainEvents, jobs: Mapping[str, PurgeJob]
) -> AsyncIterator[None]:
    """Runs the outbox dispatcher and housekeeping beside the app (each unless disabled),
    and stops them cleanly on shutdown."""
    stop = asyncio.Event()
    tasks = []
    settings = state["settings"]
    if settings.outbox_dispatcher_enabled:
        loop = build_dispatcher(state, events).run_forever(stop)
        tasks.append(asyncio.create_task(loop, name="outbox-dispatcher"))
    if settings.housekeeping_enabled:
        loop = build_housekeeper(state, jobs).run_forever(stop)
        tasks.append(asyncio.create_task(loop, name="housekeeping"))
    try:
        yield
    finally:
        stop.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()


def build_housekeeper(state: State, jobs: Mapping[str, PurgeJob]) -> Housekeeper:
    return Housekeeper(
        sessionmaker=state["sessionmaker"],
        store=state["store"],
        settings=state["settings"],
        jobs=jobs,
    )
