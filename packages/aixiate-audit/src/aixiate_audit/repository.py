"""Queries on the audit log. Constructed from a session; methods take domain arguments only."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from aixiate_core.pagination import Cursor
from sqlalchemy import ColumnElement, Table, and_, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_audit.chain import ChainChecker, Verification
from aixiate_audit.models import AuditEvent

VERIFY_BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class EventFilter:
    event_type: str | None = None
    actor_id: UUID | None = None
    target_id: str | None = None
    success: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    request_id: str | None = None
    #: Events whose actor or target is this user (a user's own security events).
    about_user: UUID | None = None


@dataclass(frozen=True, slots=True)
class EventSlice:
    events: list[AuditEvent]
    next_cursor: str | None


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, event_id: UUID) -> AuditEvent | None:
        statement = select(AuditEvent).where(col(AuditEvent.id) == event_id)
        return (await self.session.exec(statement)).first()

    async def list_page(
        self, where: EventFilter, *, limit: int, cursor: str | None = None
    ) -> EventSlice:
        statement = select(AuditEvent).where(*self._conditions(where))
        if cursor is not None:
            after = Cursor.decode(cursor)
            statement = statement.where(
                # Redundant with the OR below, but it lets PostgreSQL skip newer months'
                # partitions and start the index scan at the cursor.
                col(AuditEvent.occurred_at) <= after.at,
                or_(
                    col(AuditEvent.occurred_at) < after.at,
                    and_(
                        col(AuditEvent.occurred_at) == after.at,
                        col(AuditEvent.id) < after.id,
                    ),
                ),
            )
        statement = statement.order_by(
            col(AuditEvent.occurred_at).desc(), col(AuditEvent.id).desc()
        ).limit(limit + 1)  # one extra row says whether another page follows
        rows = list((await self.session.exec(statement)).all())
        if len(rows) <= limit:
            return EventSlice(events=rows, next_cursor=None)
        page = rows[:limit]
        return EventSlice(
            events=page, next_cursor=Cursor(page[-1].occurred_at, page[-1].id).encode()
        )

    @staticmethod
    def _conditions(where: EventFilter) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if where.event_type is not None:
            if where.event_type.endswith(".*"):
                prefix = where.event_type[:-1]  # keeps the dot: "auth." matches "auth.x"
                conditions.append(col(AuditEvent.event_type).startswith(prefix, autoescape=True))
            else:
                conditions.append(col(AuditEvent.event_type) == where.event_type)
        if where.actor_id is not None:
            conditions.append(col(AuditEvent.actor_id) == where.actor_id)
        if where.target_id is not None:
            conditions.append(col(AuditEvent.target_id) == where.target_id)
        if where.success is not None:
            conditions.append(col(AuditEvent.success) == where.success)
        if where.since is not None:
            conditions.append(col(AuditEvent.occurred_at) >= where.since)
        if where.until is not None:
            conditions.append(col(AuditEvent.occurred_at) < where.until)
        if where.request_id is not None:
            conditions.append(col(AuditEvent.request_id) == where.request_id)
        if where.about_user is not None:
            conditions.append(
                or_(
                    col(AuditEvent.actor_id) == where.about_user,
                    col(AuditEvent.target_id) == str(where.about_user),
                )
            )
        return conditions

    async def verify_chain(self, *, batch_size: int = VERIFY_BATCH_SIZE) -> Verification:
        """Recomputes the chain in ``seq`` order, ``batch_size`` rows at a time (plain rows,
        not ORM objects: nothing accumulates in the session), and stops at the first
        broken link."""
        checker = ChainChecker()
        table = cast("Table", AuditEvent.__table__)  # type: ignore[attr-defined]
        last_seq: int | None = None
        while True:
            statement = select(*table.c).order_by(table.c.seq).limit(batch_size)
            if last_seq is not None:
                statement = statement.where(table.c.seq > last_seq)
            rows = cast("list[Any]", (await self.session.exec(statement)).all())
            if not rows:
                break
            for row in rows:
                if not checker.check(row):
                    return checker.result()
            last_seq = rows[-1].seq
        return checker.result()
