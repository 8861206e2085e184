"""What the app holds while it runs, built in the lifespan and torn down after it."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_core.cache import KeyValueStore, create_store
from aixiate_core.db import create_engine, create_sessionmaker
from aixiate_core.email import EmailSender, create_email_sender
from aixiate_core.events import DomainEvents
from aixiate_core.outbox import Outbox, OutboxDispatcher
from aixiate_core.settings import Settings


class State(TypedDict):
    """Lifespan state; Starlette copies it into every ``request.state``."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    store: KeyValueStore
    email_sender: EmailSender
    outbox: Outbox


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[State]:
    engine = create_engine(settings)
    store = create_store(settings)
    try:
        yield State(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            store=store,
            email_sender=create_email_sender(settings),
            outbox=Outbox(settings),
        )
    finally:
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
async def running_dispatcher(state: State, events: DomainEvents) -> AsyncIterator[None]:
    """Runs the outbox dispatcher beside the app, and stops it cleanly on shutdown."""
    if not state["settings"].outbox_dispatcher_enabled:
        yield
        return
    stop = asyncio.Event()
    task = asyncio.create_task(
        build_dispatcher(state, events).run_forever(stop), name="outbox-dispatcher"
    )
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=10)
        except TimeoutError:
            task.cancel()
