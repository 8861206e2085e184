"""What the app holds while it runs, built in the lifespan and torn down after it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_core.cache import KeyValueStore, create_store
from aixiate_core.db import create_engine, create_sessionmaker
from aixiate_core.email import EmailSender, create_email_sender
from aixiate_core.settings import Settings


class State(TypedDict):
    """Lifespan state; Starlette copies it into every ``request.state``."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    store: KeyValueStore
    email_sender: EmailSender


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
        )
    finally:
        await store.close()
        await engine.dispose()
