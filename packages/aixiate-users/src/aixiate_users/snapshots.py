"""Snapshots of users in the shared store, so ``GET /users/me`` needs no database.

Any flush that inserts, changes or deletes a ``User`` through the ORM marks that user;
the request's commit drops the marked snapshots before and after it commits (core's
``on_commit``). Changes made outside a request's unit of work (the command line, a
worker) are covered by the snapshot TTL. Authorization never reads a snapshot: roles
come from the token and liveness from the session store.
"""

from typing import Any
from uuid import UUID

from aixiate_core.db import STORE_KEY, on_commit
from aixiate_core.store import KeyValueStore
from fastapi import Request
from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_users.models import User
from aixiate_users.schemas import UserRead

#: Seconds a snapshot may serve; the bound on staleness for changes made outside requests.
SNAPSHOT_TTL = 60.0
#: After a change, an empty marker holds the key this long, so a reader that loaded the
#: row just before the commit cannot put its stale copy back.
_TOMBSTONE_TTL = 5.0
_TOMBSTONE = b""
_CHANGED = "aixiate.users.changed"


def key(user_id: UUID) -> str:
    """The store key of a user's snapshot (a token resolver may prefetch it)."""
    return f"users:snapshot:{user_id}"


_HANDED_OVER = "aixiate_user_snapshot"


def hand_over(request: Request, user_id: UUID, raw: bytes | None) -> None:
    """Lets whoever already read the snapshot (the token resolver, with the session's
    liveness) spare :func:`get` a round trip in the same request."""
    setattr(request.state, _HANDED_OVER, (user_id, raw))


async def get_json(
    store: KeyValueStore, user_id: UUID, request: Request | None = None
) -> bytes | None:
    """The snapshot as ``UserRead`` JSON, ready to send; None on a miss."""
    handed = getattr(request.state, _HANDED_OVER, None) if request is not None else None
    if handed is not None and handed[0] == user_id:
        raw: bytes | None = handed[1]
    else:
        raw = await store.get(key(user_id))
    return raw or None


async def get(
    store: KeyValueStore, user_id: UUID, request: Request | None = None
) -> UserRead | None:
    raw = await get_json(store, user_id, request)
    return None if raw is None else UserRead.model_validate_json(raw)


async def put(store: KeyValueStore, user: User) -> bytes:
    """Caches the row just read, unless a change marked the key meanwhile, and returns
    its JSON. Callers cache active users only: a snapshot therefore always means an
    active account (deactivation is a change, which drops the snapshot)."""
    payload = UserRead.model_validate(user).model_dump_json().encode()
    await store.set_if_absent(key(user.id), payload, ttl=SNAPSHOT_TTL)
    return payload


async def forget(store: KeyValueStore, user_ids: set[UUID]) -> None:
    for user_id in user_ids:
        await store.set(key(user_id), _TOMBSTONE, ttl=_TOMBSTONE_TTL)


async def _forget_changed(session: AsyncSession) -> None:
    store: KeyValueStore | None = session.info.get(STORE_KEY)
    changed: set[UUID] = session.info.get(_CHANGED, set())
    if store is not None and changed:
        await forget(store, changed)


@event.listens_for(Session, "after_flush")
def _mark_changed(session: Session, _context: Any) -> None:
    users = [
        obj for obj in (*session.new, *session.dirty, *session.deleted) if isinstance(obj, User)
    ]
    if not users:
        return
    session.info.setdefault(_CHANGED, set()).update(user.id for user in users)
    on_commit(session, _forget_changed, before=True, after=True)
