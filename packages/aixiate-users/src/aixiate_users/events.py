"""What happens to users, published on core's event bus for the packages above.

users cannot import auth, yet deleting a user must end its sessions: users publishes
:class:`UserDeleted` and auth subscribes when the service assembles the app. Handlers run
in the publisher's transaction, so their writes commit or roll back with the change.
"""

from dataclasses import dataclass
from uuid import UUID


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


#: Every event this package publishes.
USER_EVENTS: tuple[type, ...] = (UserDeleted, UserDeactivated, UserRolesChanged, UserEmailChanged)
