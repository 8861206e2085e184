"""In-process domain events: how a lower package tells a higher one that something happened.

users cannot import auth, yet deleting a user must end its sessions. users publishes
:class:`UserDeleted`; auth subscribes when the service assembles the app. Handlers run
in the publisher's transaction, so their writes commit or roll back with the change.
"""

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession


@dataclass(frozen=True, slots=True)
class UserDeleted:
    user_id: UUID


@dataclass(frozen=True, slots=True)
class UserDeactivated:
    user_id: UUID


@dataclass(frozen=True, slots=True)
class UserRolesChanged:
    user_id: UUID
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class UserEmailChanged:
    user_id: UUID


@dataclass(frozen=True, slots=True)
class UserUnlocked:
    user_id: UUID


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

    def subscribe(self, event_type: type, handler: Handler) -> None:
        self._handlers[event_type].append(handler)

    async def publish(self, session: AsyncSession, event: object) -> None:
        for handler in self._handlers.get(type(event), ()):
            await handler(session, event)


def get_events(request: Request) -> DomainEvents:
    events: DomainEvents = request.app.state.events
    return events


EventsDep = Annotated[DomainEvents, Depends(get_events)]
