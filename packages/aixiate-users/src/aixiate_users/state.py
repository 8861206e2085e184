"""What the users package holds while the app runs, built once by whoever assembles it."""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aixiate_core.app import Extension
from aixiate_core.resources import State

from aixiate_users.passwords import Passwords
from aixiate_users.settings import UsersSettings


@dataclass(frozen=True, slots=True)
class UsersState:
    settings: UsersSettings
    passwords: Passwords

    @classmethod
    def from_settings(cls, settings: UsersSettings) -> "UsersState":
        return cls(settings=settings, passwords=Passwords(settings))


def users_extension(users: UsersState) -> Extension:
    """Puts ``users`` into the lifespan state; stops its hash workers at shutdown."""

    @asynccontextmanager
    async def extend(_: State) -> AsyncIterator[Mapping[str, Any]]:
        try:
            yield {"users": users}
        finally:
            users.passwords.shutdown(wait=False)

    return extend
