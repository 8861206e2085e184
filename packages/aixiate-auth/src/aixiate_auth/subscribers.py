"""How auth reacts to what happens to users elsewhere: their sessions end at once.

A role change revokes too: tokens carry roles, so the simplest way to make a change take
effect on the next request is to make the old tokens stop working.
"""

from collections.abc import Callable

from aixiate_core.events import DomainEvents
from aixiate_users.events import UserDeactivated, UserDeleted, UserRolesChanged
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth.services.sessions import SessionService


def subscribe(events: DomainEvents, sessions: SessionService) -> list[Callable[[], None]]:
    """Returns the unsubscribers."""

    async def on_deleted(session: AsyncSession, event: UserDeleted) -> None:
        await sessions.revoke_all(session, event.user_id, "user_deleted")

    async def on_deactivated(session: AsyncSession, event: UserDeactivated) -> None:
        await sessions.revoke_all(session, event.user_id, "user_deactivated")

    async def on_roles_changed(session: AsyncSession, event: UserRolesChanged) -> None:
        await sessions.revoke_all(session, event.user_id, "roles_changed")

    return [
        events.subscribe(UserDeleted, on_deleted),
        events.subscribe(UserDeactivated, on_deactivated),
        events.subscribe(UserRolesChanged, on_roles_changed),
    ]
