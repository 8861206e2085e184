"""What can happen to a user: self-service profile changes and admin user management.

Functions add and flush; the request's session dependency commits (or rolls back on any
error), so a change, its audit event, its domain event handlers' writes and its emails in
the outbox commit together or not at all. A refused password or token is audited the other
way round: the function rolls the session back itself and commits the failure event on its
own (``sessionmaker``), so that the event survives the failing request.
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from aixiate_audit import service as audit_service
from aixiate_core.db import end_read, utc_now
from aixiate_core.events import DomainEvents
from aixiate_core.outbox import Outbox
from aixiate_core.schemas import Page
from aixiate_core.security import Principal
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_users import action_tokens as tokens
from aixiate_users.action_tokens import TokenPurpose
from aixiate_users.errors import (
    CannotModifySelf,
    EmailTaken,
    EmailUnchanged,
    InvalidActionToken,
    InvalidPassword,
)
from aixiate_users.events import UserDeactivated, UserDeleted, UserEmailChanged, UserRolesChanged
from aixiate_users.models import User
from aixiate_users.passwords import Passwords
from aixiate_users.repository import UserRepository, normalize_email
from aixiate_users.schemas import (
    AdminUserCreate,
    AdminUserUpdate,
    EmailChangeRequest,
    PasswordConfirmation,
    UserListQuery,
    UserRead,
    UserUpdate,
)
from aixiate_users.settings import UsersSettings

ADMIN_ROLE = "admin"
TARGET_USER = "user"


# --- self-service -----------------------------------------------------------------------


async def update_me(session: AsyncSession, user: User, body: UserUpdate) -> User:
    changes = body.model_dump(exclude_unset=True)
    if changed := _apply(user, changes):
        await audit_service.record(
            session,
            "user.updated",
            actor_id=user.id,
            target_type=TARGET_USER,
            target_id=user.id,
            data={"fields": changed},
        )
    return user


async def request_email_change(
    session: AsyncSession,
    user: User,
    body: EmailChangeRequest,
    *,
    passwords: Passwords,
    outbox: Outbox,
    settings: UsersSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Sends a confirmation link to the new address and a notice to the current one.

    A wrong password raises :class:`InvalidPassword` (403 ``invalid_password``): the caller
    holds a valid token, so 401 would wrongly tell the client its session is gone. It is
    audited as ``user.email.change_request.failed``.

    When the new address already belongs to another account, that account's owner gets a
    notice instead of a link, and the caller sees exactly what a successful request shows
    (the same answer, and the same notice to the current address): this endpoint must not
    tell anyone with a login whether an address is registered.
    """
    await _confirm_password(
        session,
        user,
        body.password,
        passwords,
        sessionmaker=sessionmaker,
        failure="user.email.change_request.failed",
    )
    new_email = normalize_email(body.new_email)
    if new_email == user.email:
        raise EmailUnchanged()
    owner = await UserRepository(session).get_by_email(new_email)
    if owner is not None:
        await outbox.enqueue(
            session, to=new_email, template="email_change_taken", context={"name": owner.full_name}
        )
    else:
        token = await tokens.issue(
            session,
            user_id=user.id,
            purpose=TokenPurpose.CHANGE_EMAIL,
            ttl=settings.email_change_ttl,
            data={"new_email": new_email},
        )
        await outbox.enqueue(
            session,
            to=new_email,
            template="email_change_confirm",
            context={
                "name": user.full_name,
                "link": outbox.link("confirm-email", token),
                "new_email": new_email,
                "expires_hours": math.ceil(settings.email_change_ttl.total_seconds() / 3600),
            },
        )
    await outbox.enqueue(
        session,
        to=user.email,
        template="email_change_notice",
        context={"name": user.full_name, "new_email_masked": mask_email(new_email)},
    )
    await audit_service.record(
        session,
        "user.email.change_requested",
        actor_id=user.id,
        target_type=TARGET_USER,
        target_id=user.id,
        data={"new_email": mask_email(new_email)},
    )


async def confirm_email_change(
    session: AsyncSession,
    token: str,
    *,
    events: DomainEvents,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> User:
    """Completes an email change with the token from the confirmation link.

    Public for aixiate-auth's ``POST /auth/confirm-email``. Raises
    :class:`InvalidActionToken` (400) for a token that is unknown, used, expired or of
    another purpose, or whose account is gone or deactivated, and :class:`EmailTaken` (409)
    when another account took the address since the link was sent. The address is
    verified by the very click, so ``is_verified`` becomes true. Reset and verification
    links still out for the old address stop working. A refused token is audited as
    ``user.email.change.failed``, with why.
    """
    action = await tokens.consume(session, token, TokenPurpose.CHANGE_EMAIL)
    if action is None:
        refusal = await tokens.refusal(session, token, TokenPurpose.CHANGE_EMAIL)
        await _change_failed(session, sessionmaker, refusal.reason, refusal.user_id)
        raise InvalidActionToken()
    new_email = action.data.get("new_email")
    user = await UserRepository(session).get(action.user_id)
    if user is None or not user.is_active:
        reason = "unknown_user" if user is None else "inactive"
        await _change_failed(session, sessionmaker, reason, action.user_id)
        raise InvalidActionToken()
    if not isinstance(new_email, str):
        await _change_failed(session, sessionmaker, "malformed_token", user.id)
        raise InvalidActionToken()
    owner = await UserRepository(session).get_by_email(new_email)
    if owner is not None and owner.id != user.id:
        raise EmailTaken()
    old_email = user.email
    with _email_unique():
        async with session.begin_nested():
            user.email = new_email
            user.is_verified = True
    await tokens.retire(
        session,
        user_id=user.id,
        purposes=(TokenPurpose.VERIFY_EMAIL, TokenPurpose.RESET_PASSWORD),
    )
    await events.publish(session, UserEmailChanged(user_id=user.id))
    await audit_service.record(
        session,
        "user.email.changed",
        actor_id=user.id,
        target_type=TARGET_USER,
        target_id=user.id,
        data={"old_email": mask_email(old_email), "new_email": mask_email(new_email)},
    )
    return user


async def _change_failed(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    reason: str,
    user_id: UUID | None,
) -> None:
    await audit_service.record_failure(
        session, sessionmaker, "user.email.change.failed", user_id=user_id, reason=reason
    )


async def delete_me(
    session: AsyncSession,
    user: User,
    body: PasswordConfirmation,
    *,
    passwords: Passwords,
    events: DomainEvents,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Deletes the caller's account; a wrong password raises :class:`InvalidPassword` (403),
    audited as ``user.delete.failed``.

    ``UserDeleted`` goes out before the row does, in the same transaction, so subscribers
    (auth revoking every session) still see the user and their writes commit with the
    deletion. The audit event outlives the user: audit keeps ids without foreign keys.
    """
    await _confirm_password(
        session,
        user,
        body.password,
        passwords,
        sessionmaker=sessionmaker,
        failure="user.delete.failed",
    )
    await _delete(session, user, actor_id=user.id, event_type="user.deleted", events=events)


# --- administration ---------------------------------------------------------------------


async def list_users(session: AsyncSession, query: UserListQuery) -> Page[UserRead]:
    found = await UserRepository(session).list_page(
        q=query.q,
        role=query.role,
        is_active=query.is_active,
        limit=query.limit,
        cursor=query.cursor,
    )
    return Page[UserRead](
        items=[UserRead.model_validate(user) for user in found.users],
        next_cursor=found.next_cursor,
    )


async def create_user(
    session: AsyncSession,
    body: AdminUserCreate,
    *,
    admin: Principal | None,
    passwords: Passwords,
) -> User:
    """Creates an account with a password the admin chose. Unlike registration this says
    409 ``email_taken`` for a known address: admins may learn that, and need to.
    ``admin`` is None for the operator's command line (``aixiate user create``)."""
    email = normalize_email(body.email)
    repository = UserRepository(session)
    if await repository.get_by_email(email) is not None:
        raise EmailTaken()
    passwords.check_policy(body.password, email=email)
    await end_read(session)
    user = User(
        email=email,
        password_hash=await passwords.hash(body.password),
        password_changed_at=utc_now(),
        full_name=body.full_name,
        roles=list(body.roles),
        is_verified=body.is_verified,
    )
    # The check above is a courtesy; the unique index decides under concurrent requests.
    with _email_unique():
        async with session.begin_nested():
            await repository.add(user)
    await audit_service.record(
        session,
        "admin.user.created",
        actor_id=admin.user_id if admin else None,
        target_type=TARGET_USER,
        target_id=user.id,
        data={
            "roles": user.roles,
            "is_verified": user.is_verified,
            "via": "api" if admin else "cli",
        },
    )
    return user


async def update_user(
    session: AsyncSession,
    user: User,
    body: AdminUserUpdate,
    *,
    admin: Principal,
    events: DomainEvents,
) -> User:
    """Applies the given fields. Admins cannot deactivate themselves or drop their own
    admin role (:class:`CannotModifySelf`), so nobody locks themselves out by accident.
    Role changes and deactivation are published, so auth can end sessions and drop
    cached principals."""
    changes = body.model_dump(exclude_unset=True)
    if user.id == admin.user_id:
        if changes.get("is_active") is False:
            raise CannotModifySelf("You cannot deactivate your own account.")
        if "roles" in changes and ADMIN_ROLE not in changes["roles"]:
            raise CannotModifySelf("You cannot remove your own admin role.")
    was_active = user.is_active
    changed = _apply(user, changes)
    if not changed:
        return user
    await session.flush()
    if "roles" in changed:
        await events.publish(session, UserRolesChanged(user_id=user.id, roles=user.role_set))
    if was_active and not user.is_active:
        await events.publish(session, UserDeactivated(user_id=user.id))
    data: dict[str, Any] = {"fields": changed}
    if "roles" in changed:
        data["roles"] = user.roles
    await audit_service.record(
        session,
        "admin.user.updated",
        actor_id=admin.user_id,
        target_type=TARGET_USER,
        target_id=user.id,
        data=data,
    )
    return user


async def delete_user(
    session: AsyncSession, user: User, *, admin: Principal, events: DomainEvents
) -> None:
    if user.id == admin.user_id:
        raise CannotModifySelf("You cannot delete your own account here; use DELETE /users/me.")
    await _delete(
        session, user, actor_id=admin.user_id, event_type="admin.user.deleted", events=events
    )


# --- helpers ----------------------------------------------------------------------------


def mask_email(email: str) -> str:
    """``alice@example.com`` -> ``a***@e***.com``: enough for the owner to recognise an
    address, too little to learn it from a notice that reached the wrong mailbox."""
    local, _, domain = email.rpartition("@")
    name, dot, tld = domain.rpartition(".")
    if not name:
        name, tld = tld, ""
    return f"{local[:1]}***@{name[:1]}***{dot}{tld}"


async def _confirm_password(
    session: AsyncSession,
    user: User,
    password: str,
    passwords: Passwords,
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    failure: str,
) -> None:
    """Raises :class:`InvalidPassword` for a wrong password, after auditing it as
    ``failure`` (an attempt on a stolen session is exactly what the owner must see)."""
    await end_read(session)
    check = await passwords.verify(password, user.password_hash)
    if not check.valid:
        await audit_service.record_failure(
            session, sessionmaker, failure, user_id=user.id, reason="bad_password"
        )
        raise InvalidPassword()
    if check.new_hash is not None:
        # Upgrade an outdated hash while the plain password is at hand.
        user.password_hash = check.new_hash
        await session.flush()


async def _delete(
    session: AsyncSession,
    user: User,
    *,
    actor_id: UUID,
    event_type: str,
    events: DomainEvents,
) -> None:
    await events.publish(session, UserDeleted(user_id=user.id))
    await audit_service.record(
        session, event_type, actor_id=actor_id, target_type=TARGET_USER, target_id=user.id
    )
    await UserRepository(session).delete(user)


def _apply(user: User, changes: dict[str, Any]) -> list[str]:
    """Sets the values that differ; returns the names of the fields it changed."""
    changed = []
    for field, value in changes.items():
        if getattr(user, field) != value:
            setattr(user, field, list(value) if isinstance(value, list) else value)
            changed.append(field)
    return changed


@contextmanager
def _email_unique() -> Iterator[None]:
    """Turns a unique-index violation on the email into 409 ``email_taken``. Use around a
    ``begin_nested()`` block, so only the savepoint rolls back and the request's
    transaction stays usable (PostgreSQL aborts a transaction on any failed statement)."""
    try:
        yield
    except IntegrityError as exc:
        raise EmailTaken() from exc
