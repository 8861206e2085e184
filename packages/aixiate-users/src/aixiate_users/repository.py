"""Every query of the users package. Built from a session; methods take domain arguments."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from aixiate_core.pagination import Cursor
from sqlalchemy import ColumnElement, and_, delete, func, literal, or_, type_coerce, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_users.models import ActionToken, User


def normalize_email(email: str) -> str:
    """The one spelling of an address we store and look up: trimmed, lower-case.

    Lower-casing the local part is technically lossy (RFC 5321), but no real provider
    distinguishes case, and one account per mailbox is what users expect.
    """
    return email.strip().lower()


def escape_like(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern (with ``ESCAPE '\\'``): a search for
    "%" or "_" finds those characters instead of matching everything."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class UserSlice:
    users: list[User]
    next_cursor: str | None


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: UUID) -> User | None:
        return await self.session.get(User, user_id)

    async def get_by_email(self, email: str) -> User | None:
        statement = select(User).where(User.email == normalize_email(email))
        return (await self.session.exec(statement)).first()

    async def add(self, user: User) -> User:
        self.session.add(user)
        await self.session.flush()
        return user

    async def delete(self, user: User) -> None:
        # Rows that reference the user (action tokens) go by ON DELETE CASCADE.
        await self.session.delete(user)
        await self.session.flush()

    async def list_page(
        self,
        *,
        q: str | None = None,
        role: str | None = None,
        is_active: bool | None = None,
        limit: int,
        cursor: str | None = None,
    ) -> UserSlice:
        """Newest first. ``q`` matches a substring of the email or the full name, ignoring
        case (on SQLite, ASCII case only)."""
        statement = select(User)
        if q:
            pattern = f"%{escape_like(q.lower())}%"
            statement = statement.where(
                or_(
                    col(User.email).ilike(pattern, escape="\\"),
                    col(User.full_name).ilike(pattern, escape="\\"),
                )
            )
        if role is not None:
            statement = statement.where(self._has_role(role))
        if is_active is not None:
            statement = statement.where(col(User.is_active) == is_active)
        if cursor is not None:
            after = Cursor.decode(cursor)
            statement = statement.where(
                or_(
                    col(User.created_at) < after.at,
                    and_(col(User.created_at) == after.at, col(User.id) < after.id),
                )
            )
        statement = statement.order_by(col(User.created_at).desc(), col(User.id).desc())
        # One extra row says whether another page follows, without a COUNT.
        rows = list((await self.session.exec(statement.limit(limit + 1))).all())
        if len(rows) <= limit:
            return UserSlice(users=rows, next_cursor=None)
        page = rows[:limit]
        last = page[-1]
        return UserSlice(users=page, next_cursor=Cursor(last.created_at, last.id).encode())

    def _has_role(self, role: str) -> ColumnElement[bool]:
        # roles is a JSON list. PostgreSQL: JSONB containment (@>), which a GIN index can
        # serve. SQLite: a correlated json_each, since LIKE on the JSON text would let
        # "admin" match "admin:read".
        if self.session.get_bind().dialect.name == "postgresql":
            return type_coerce(col(User.roles), JSONB).contains([role])
        elements = func.json_each(col(User.roles)).table_valued("value")
        return select(literal(1)).select_from(elements).where(elements.c.value == role).exists()


class ActionTokenRepository:
    """The single-use tokens sent by email, by the SHA-256 of the raw token."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, token: ActionToken) -> None:
        self.session.add(token)
        await self.session.flush()

    async def retire_unused(self, user_id: UUID, purposes: Iterable[str], now: datetime) -> None:
        """Marks the user's unused tokens of ``purposes`` used."""
        await self.session.exec(
            update(ActionToken)
            .where(col(ActionToken.user_id) == user_id)
            .where(col(ActionToken.purpose).in_(list(purposes)))
            .where(col(ActionToken.used_at).is_(None))
            .values(used_at=now, updated_at=now)
        )

    async def claim(self, token_hash: str, purpose: str, now: datetime) -> ActionToken | None:
        """Marks an unused, unexpired token of ``purpose`` used and returns it. One
        conditional UPDATE, so of two concurrent uses exactly one claims it."""
        result = await self.session.exec(
            update(ActionToken)
            .where(col(ActionToken.token_hash) == token_hash)
            .where(col(ActionToken.purpose) == purpose)
            .where(col(ActionToken.used_at).is_(None))
            .where(col(ActionToken.expires_at) > now)
            .values(used_at=now, updated_at=now)
            .returning(col(ActionToken.id))
        )
        token_id = result.scalar_one_or_none()
        if token_id is None:
            return None
        return await self.session.get(ActionToken, token_id)

    async def get_by_hash(self, token_hash: str) -> ActionToken | None:
        statement = select(ActionToken).where(col(ActionToken.token_hash) == token_hash)
        return (await self.session.exec(statement)).first()

    async def delete_spent_before(self, cutoff: datetime) -> int:
        """Deletes tokens that expired or were used before ``cutoff``."""
        result = await self.session.exec(
            delete(ActionToken).where(
                or_(col(ActionToken.expires_at) < cutoff, col(ActionToken.used_at) < cutoff)
            )
        )
        return int(result.rowcount)
