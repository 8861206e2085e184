"""``/users``: self-service profile routes and admin user management; and
``POST /auth/confirm-email``, the end of the email change that starts at
``POST /users/me/email`` (the path is under /auth for clients; the flow is users')."""

from typing import Annotated

from aixiate_audit import service as audit_service
from aixiate_audit.schemas import AuditPage, PageQuery
from aixiate_core.db import SessionDep, SessionMakerDep
from aixiate_core.errors import problem_responses
from aixiate_core.events import EventsDep
from aixiate_core.outbox import OutboxDep
from aixiate_core.schemas import Accepted, Page
from aixiate_core.security import AdminPrincipal, CurrentPrincipal
from fastapi import APIRouter, Query, Response, status

from aixiate_users import service as users_service
from aixiate_users.dependencies import CurrentUser, CurrentUserJSON, TargetUser, UsersDep
from aixiate_users.errors import (
    CannotModifySelf,
    EmailTaken,
    EmailUnchanged,
    InvalidActionToken,
    InvalidCursor,
    InvalidPassword,
    UserNotFound,
    WeakPassword,
)
from aixiate_users.models import User
from aixiate_users.schemas import (
    AdminUserCreate,
    AdminUserUpdate,
    EmailChangeConfirmation,
    EmailChangeRequest,
    PasswordConfirmation,
    UserListQuery,
    UserRead,
    UserUpdate,
)

router = APIRouter(prefix="/users", tags=["users"])

EMAIL_CHANGE_ACCEPTED = (
    "If the new address can be used, a confirmation link is on its way to it. "
    "The change takes effect once the link is followed."
)


# The /me routes come first: "/{user_id}" would otherwise capture "me".


@router.get("/me", response_model=UserRead, responses=problem_responses(validation=False))
async def read_me(user: CurrentUserJSON) -> Response:
    """The caller's own account."""
    return Response(user, media_type="application/json")


@router.patch("/me", response_model=UserRead, responses=problem_responses())
async def update_me(body: UserUpdate, user: CurrentUser, session: SessionDep) -> User:
    """Changes the caller's profile. Omitted fields stay as they are; `full_name: null` (or
    a blank name) clears the name. Names are at most 200 characters without control
    characters. The email address has its own flow (`POST /users/me/email`)."""
    return await users_service.update_me(session, user, body)


@router.post(
    "/me/email",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=problem_responses(InvalidPassword, EmailUnchanged),
)
async def request_email_change(
    body: EmailChangeRequest,
    user: CurrentUser,
    session: SessionDep,
    sessionmaker: SessionMakerDep,
    users: UsersDep,
    outbox: OutboxDep,
) -> Accepted:
    """Starts changing the caller's email address; the current password confirms it.

    A single-use link goes to the new address (valid for the email verification TTL,
    24 hours by default); posting its token to `POST /auth/confirm-email` completes the
    change. The current address is told about the request. The answer is the same
    whether or not the new address is free, so it reveals nothing about other accounts.
    A wrong password answers 403 `invalid_password` (the token itself is fine)."""
    await users_service.request_email_change(
        session,
        user,
        body,
        passwords=users.passwords,
        outbox=outbox,
        settings=users.settings,
        sessionmaker=sessionmaker,
    )
    return Accepted(detail=EMAIL_CHANGE_ACCEPTED)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(InvalidPassword),
)
async def delete_me(
    body: PasswordConfirmation,
    user: CurrentUser,
    session: SessionDep,
    sessionmaker: SessionMakerDep,
    users: UsersDep,
    events: EventsDep,
) -> None:
    """Deletes the caller's account for good and ends all its sessions; the current
    password confirms it (403 `invalid_password` when wrong). The audit trail of the
    account is kept."""
    await users_service.delete_me(
        session, user, body, passwords=users.passwords, events=events, sessionmaker=sessionmaker
    )


@router.get(
    "/me/security-events",
    response_model=AuditPage,
    responses=problem_responses(InvalidCursor),
)
async def my_security_events(
    query: Annotated[PageQuery, Query()], principal: CurrentPrincipal, session: SessionDep
) -> AuditPage:
    """The audit events about the caller's own account, newest first: sign-ins and
    failed attempts, password and email changes, sessions ended, and what administrators
    changed. Events about other users never appear; when someone else acted, their id,
    address and browser are left out. Page with `limit` and `next_cursor` as `cursor`."""
    return await audit_service.security_events(session, principal.user_id, query)


# Both spellings of the collection: "/users/" (the documented one) and "/users", which clients also
# send; a redirect would drop the body of a POST in many clients.
@router.get("", response_model=Page[UserRead], include_in_schema=False)
@router.get(
    "/",
    response_model=Page[UserRead],
    responses=problem_responses(InvalidCursor, admin=True),
)
async def list_users(
    query: Annotated[UserListQuery, Query()], _admin: AdminPrincipal, session: SessionDep
) -> Page[UserRead]:
    """Lists users, newest first, one page at a time (role `admin`).

    Filters combine: `q` matches part of the email or full name regardless of case, `role`
    keeps users holding that role, `is_active` keeps active or inactive ones. Pass the
    page's `next_cursor` back as `cursor`, with the same filters, for the next page; it is
    `null` on the last page."""
    return await users_service.list_users(session, query)


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=UserRead, include_in_schema=False
)
@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=problem_responses(EmailTaken, WeakPassword, admin=True),
)
async def create_user(
    body: AdminUserCreate,
    admin: AdminPrincipal,
    session: SessionDep,
    users: UsersDep,
) -> User:
    """Creates a user with the given password (role `admin`). The password policy
    applies (422 `weak_password`); an address already in use answers 409 `email_taken`.
    No email is sent; `is_verified: true` marks the address as verified."""
    return await users_service.create_user(session, body, admin=admin, passwords=users.passwords)


@router.get(
    "/{user_id}",
    response_model=UserRead,
    responses=problem_responses(UserNotFound, admin=True),
)
async def read_user(user: TargetUser) -> User:
    """One user (role `admin`)."""
    return user


@router.patch(
    "/{user_id}",
    response_model=UserRead,
    responses=problem_responses(UserNotFound, CannotModifySelf, admin=True),
)
async def update_user(
    body: AdminUserUpdate,
    user: TargetUser,
    admin: AdminPrincipal,
    session: SessionDep,
    events: EventsDep,
) -> User:
    """Changes a user (role `admin`); omitted fields stay as they are. `roles` replaces
    the whole list. Deactivating a user or changing its roles ends or refreshes its
    sessions. Admins cannot deactivate themselves or remove their own `admin` role
    (409 `cannot_modify_self`)."""
    return await users_service.update_user(session, user, body, admin=admin, events=events)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(UserNotFound, CannotModifySelf, admin=True),
)
async def delete_user(
    user: TargetUser, admin: AdminPrincipal, session: SessionDep, events: EventsDep
) -> None:
    """Deletes a user for good and ends all its sessions (role `admin`). The audit trail
    is kept. Admins delete their own account with `DELETE /users/me` instead (409
    `cannot_modify_self` here)."""
    await users_service.delete_user(session, user, admin=admin, events=events)


# --- the end of an email change, at the path clients know --------------------------------

confirm_email_router = APIRouter(prefix="/auth", tags=["auth"])


@confirm_email_router.post(
    "/confirm-email",
    response_model=UserRead,
    responses=problem_responses(InvalidActionToken, EmailTaken, auth=False),
)
async def confirm_email(
    body: EmailChangeConfirmation,
    session: SessionDep,
    sessionmaker: SessionMakerDep,
    events: EventsDep,
) -> User:
    """Completes an email change (see `POST /users/me/email`) with the token sent to the
    new address, and marks that address verified. Each token works once and expires
    with the verification TTL."""
    return await users_service.confirm_email_change(
        session, body.token, events=events, sessionmaker=sessionmaker
    )
