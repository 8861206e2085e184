"""In-process domain events: how a lower package tells a higher one that something happened.

A package publishes its own event types (users' live in ``aixiate_users.events``); the
service subscribes the handlers of the packages above when it assembles the app. Handlers
run in the publisher's transaction, so their writes commit or roll back with the change.
Core's only event of its own is :class:`EmailDeliveryFailed`.
"""

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession


@dataclass(frozen=True, slots=True)
class EmailDeliveryFailed:
    message_id: UUID
    template: str
    attempts: int
    reason: str


Handler = Callable[[AsyncSession, Any], Awaitable[None]]


class DomainEvents:
    def __init__(self) -> None:
        self._handlers: defaultdict[type, list[Handler]] = defaultdict(list)

    def subscribe(self, event_type: type, handler: Handler) -> Callable[[], None]:
        """Returns what undoes the subscription (for subscribers that live with a lifespan)."""
        self._handlers[event_type].append(handler)
        return lambda: self._handlers[event_type].remove(handler)

    async def publish(self, session: AsyncSession, event: object) -> None:
        for handler in self._handlers.get(type(event), ()):
            await handler(session, event)


def get_events(request: Request) -> DomainEvents:
    events: DomainEvents = request.app.state.events
    return events


EventsDep = Annotated[DomainEvents, Depends(get_events)]
