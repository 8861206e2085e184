import asyncio
import itertools
from uuid import UUID, uuid4

import pytest
from aixiate_audit import service as audit_service
from aixiate_audit.chain import GENESIS_HASH, compute_hash
from aixiate_audit.models import AuditEvent
from aixiate_audit.repository import AuditRepository
from aixiate_core.db import create_sessionmaker
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, delete, select, update
from sqlmodel.ext.asyncio.session import AsyncSession


async def _five(session: AsyncSession) -> list[AuditEvent]:
    return [
        await audit_service.record(session, "test.chain", reason=f"n{n}", data={"n": n})
        for n in range(5)
    ]


async def verdict(session: AsyncSession, **options: int) -> tuple[bool, UUID | None, str | None]:
    """What a full verification says: intact or not, the first bad event, and why."""
    result = await AuditRepository(session).verify_chain(**options)
    return result.ok, result.first_bad_id, result.problem


class TestAppend:
    async def test_each_event_links_to_the_previous_one(self, session: AsyncSession) -> None:
        events = await _five(session)
        for before, after in itertools.pairwise(events):
            assert after.seq == before.seq + 1
            assert after.prev_hash == before.hash
            assert after.occurred_at >= before.occurred_at
        assert all(e.hash == compute_hash(e) and len(e.hash) == 64 for e in events)

    async def test_the_first_event_links_to_genesis(self, session: AsyncSession) -> None:
        await session.exec(delete(AuditEvent))
        event = await audit_service.record(session, "test.first")
        assert (event.seq, event.prev_hash) == (1, GENESIS_HASH)

    async def test_an_intact_chain_verifies(self, session: AsyncSession) -> None:
        await _five(session)
        result = await AuditRepository(session).verify_chain(batch_size=2)
        assert result.ok
        assert result.first_bad_id is None
        assert result.checked >= 5
        head = (
            await session.exec(select(AuditEvent).order_by(col(AuditEvent.seq).desc()).limit(1))
        ).one()
        assert (result.head_seq, result.head_hash) == (head.seq, head.hash)

    async def test_concurrent_appends_keep_one_chain(self, engine: AsyncEngine) -> None:
        sessionmaker = create_sessionmaker(engine)
        event_type = f"test.concurrent.{uuid4().hex}"
        await asyncio.gather(
            *(audit_service.record_now(sessionmaker, event_type) for _ in range(40))
        )
        async with sessionmaker() as session:
            found = (
                await session.exec(select(AuditEvent).where(AuditEvent.event_type == event_type))
            ).all()
            assert len({e.seq for e in found}) == 40
            assert (await AuditRepository(session).verify_chain()).ok


class TestTamperEvidence:
    @pytest.mark.parametrize("field", ["reason", "data", "actor_id", "occurred_at"])
    async def test_a_changed_field_names_that_event(
        self, session: AsyncSession, field: str
    ) -> None:
        events = await _five(session)
        victim = events[2]
        changes = {
            "reason": "nothing to see",
            "data": {"n": 99},
            "actor_id": uuid4(),
            "occurred_at": victim.occurred_at.replace(
                microsecond=(victim.occurred_at.microsecond + 1) % 10**6
            ),
        }
        await session.exec(
            update(AuditEvent)
            .where(col(AuditEvent.id) == victim.id)
            .values({field: changes[field]})
        )
        assert await verdict(session, batch_size=3) == (False, victim.id, "hash_mismatch")

    async def test_a_deleted_event_names_the_one_after_it(self, session: AsyncSession) -> None:
        events = await _five(session)
        await session.exec(delete(AuditEvent).where(col(AuditEvent.id) == events[2].id))
        assert await verdict(session) == (False, events[3].id, "seq_gap")

    async def test_an_inserted_event_is_named(self, session: AsyncSession) -> None:
        events = await _five(session)
        forged = AuditEvent(
            event_type="admin.user.created",
            seq=events[-1].seq + 1,
            prev_hash="f" * 64,  # a guess: the real head hash is unknown to the forger
            hash="0" * 63 + "1",
        )
        forged.hash = compute_hash(forged)  # consistent in itself, but not linked
        session.add(forged)
        await session.flush()
        assert await verdict(session) == (False, forged.id, "prev_hash_mismatch")

    async def test_an_event_with_a_rewritten_hash_is_named(self, session: AsyncSession) -> None:
        events = await _five(session)
        await session.exec(
            update(AuditEvent).where(col(AuditEvent.id) == events[1].id).values(hash="a" * 64)
        )
        result = await AuditRepository(session).verify_chain()
        assert (result.first_bad_id, result.problem) == (events[1].id, "hash_mismatch")
