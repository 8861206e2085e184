"""Dependencies that load users: the caller's own account and the account a path names."""

from typing import Annotated
from uuid import UUID

from aixiate_core.db import SessionDep, SessionMakerDep
from aixiate_core.errors import InvalidToken
from aixiate_core.security import AdminPrincipal, CurrentPrincipal
from aixiate_core.store import KeyValueStore
from fastapi import Depends, Path, Request

from aixiate_users import snapshots
from aixiate_users.errors import UserNotFound
from aixiate_users.models import User
from aixiate_users.repository import UserRepository
from aixiate_users.state import UsersState


def get_users(request: Request) -> UsersState:
    """The users package's state (settings, passwords), put there at start-up."""
    users: UsersState = request.state.users
    return users


UsersDep = Annotated[UsersState, Depends(get_users)]


async def get_current_user(principal: CurrentPrincipal, session: SessionDep) -> User:
    # A token can outlive its account for a moment (deleted or deactivated on another
    # replica before the revocation reached the cache): the token is what is wrong then.
    user = await UserRepository(session).get(principal.user_id)
    if user is None or not user.is_active:
        raise InvalidToken()
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_current_user_json(
    principal: CurrentPrincipal, request: Request, sessionmaker: SessionMakerDep
) -> bytes:
    """The caller as ``UserRead`` JSON, from the snapshot cache when possible: on a hit,
    ``GET /users/me`` touches no database, builds no session and parses no model."""
    store: KeyValueStore = request.state.store
    snapshot = await snapshots.get_json(store, principal.user_id, request)
    if snapshot is None:
        async with sessionmaker() as session:
            user = await UserRepository(session).get(principal.user_id)
            if user is None or not user.is_active:
                raise InvalidToken()
            snapshot = await snapshots.put(store, user)
    return snapshot


CurrentUserJSON = Annotated[bytes, Depends(get_current_user_json)]


async def get_target_user(
    user_id: Annotated[UUID, Path(description="The user's id.")],
    _admin: AdminPrincipal,
    session: SessionDep,
) -> User:
    # Depends on the admin check first, so a non-admin learns nothing (403, never 404).
    user = await UserRepository(session).get(user_id)
    if user is None:
        raise UserNotFound()
    return user


TargetUser = Annotated[User, Depends(get_target_user)]
