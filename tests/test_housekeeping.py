"""The service's purge jobs against the migrated schema: stale rows go, live ones stay."""

from datetime import timedelta
from uuid import UUID

import pytest
from aixiate_api.wiring import purge_jobs
from aixiate_auth.models import AuthSession, RefreshToken
from aixiate_core.db import TableBase, create_sessionmaker, utc_now
from aixiate_core.outbox import OutboxEmail
from aixiate_core.settings import Settings
from aixiate_users.models import ActionToken, User
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

DAY = timedelta(days=1)


@pytest.fixture
def db(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


async def _ids(
    db: async_sessionmaker[AsyncSession], model: type[TableBase], ids: list[UUID]
) -> set[UUID]:
    async with db() as session:
        rows = (await session.exec(select(model.id).where(col(model.id).in_(ids)))).all()
    return set(rows)


class TestPurgeJobs:
    async def test_stale_rows_go_and_live_ones_stay(
        self, db: async_sessionmaker[AsyncSession], settings: Settings
    ) -> None:
        now = utc_now()
        user = User(email=f"purge-{now.timestamp()}@example.test", roles=[])
        live = AuthSession(user_id=user.id, expires_at=now + DAY, idle_expires_at=now + DAY)
        expired = AuthSession(
            user_id=user.id, expires_at=now - 8 * DAY, idle_expires_at=now - 8 * DAY
        )
        revoked = AuthSession(
            user_id=user.id,
            expires_at=now + DAY,
            idle_expires_at=now + DAY,
            revoked_at=now - 8 * DAY,
        )
        expired_token = RefreshToken(session_id=expired.id, token_hash="a" * 64)
        fresh_link = ActionToken(
            user_id=user.id, purpose="verify_email", token_hash="b" * 64, expires_at=now + DAY
        )
        old_link = ActionToken(
            user_id=user.id, purpose="verify_email", token_hash="c" * 64, expires_at=now - 2 * DAY
        )
        sent_long_ago = OutboxEmail(
            template="verify_email", status="sent", updated_at=now - 30 * DAY
        )
        pending = OutboxEmail(template="verify_email", status="pending", updated_at=now - 30 * DAY)
        async with db() as session, session.begin():
            session.add(user)
            await session.flush()
            session.add_all([live, expired, revoked, fresh_link, old_link, sent_long_ago, pending])
            await session.flush()
            session.add(expired_token)

        for name, job in purge_jobs(settings).items():
            async with db() as session, session.begin():
                assert await job(session, now) >= 0, name

        sessions = [live.id, expired.id, revoked.id]
        assert await _ids(db, AuthSession, sessions) == {live.id}
        assert await _ids(db, RefreshToken, [expired_token.id]) == set()
        assert await _ids(db, ActionToken, [fresh_link.id, old_link.id]) == {fresh_link.id}
        outbox = [sent_long_ago.id, pending.id]
        assert await _ids(db, OutboxEmail, outbox) == {pending.id}
