import asyncio
from uuid import uuid4

import pytest
from aixiate_audit import service as audit_service
from aixiate_audit.models import AuditEvent
from aixiate_audit.repository import AuditRepository
from aixiate_core.context import RequestInfo, reset_current_request, set_current_request
from aixiate_core.db import create_sessionmaker
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession


async def _events(engine: AsyncEngine, event_type: str) -> list[AuditEvent]:
    async with create_sessionmaker(engine)() as session:
        result = await session.exec(select(AuditEvent).where(AuditEvent.event_type == event_type))
        return list(result.all())


class TestRecord:
    async def test_event_joins_the_callers_transaction(self, session: AsyncSession) -> None:
        actor = uuid4()
        event = await audit_service.record(
            session,
            "user.registered",
            actor_id=actor,
            target_type="user",
            target_id=actor,
            data={"method": "password"},
        )
        found = await AuditRepository(session).get(event.id)
        assert found is not None
        assert found.target_id == str(actor)
        assert found.data == {"method": "password"}
        assert found.occurred_at.tzinfo is not None

    async def test_event_rolls_back_with_the_change(self, engine: AsyncEngine) -> None:
        event_type = f"test.rolled_back.{uuid4().hex}"
        async with create_sessionmaker(engine)() as session:
            await audit_service.record(session, event_type)
            await session.rollback()
        assert await _events(engine, event_type) == []

    async def test_request_facts_come_from_the_request_context(self, session: AsyncSession) -> None:
        token = set_current_request(RequestInfo("req-42", "198.51.100.4", "ua/1.0" + "x" * 900))
        try:
            event = await audit_service.record(session, "auth.logout")
        finally:
            reset_current_request(token)
        assert event.request_id == "req-42"
        assert event.ip == "198.51.100.4"
        assert event.user_agent is not None
        assert len(event.user_agent) == 512

    async def test_outside_a_request_the_facts_are_empty(self, session: AsyncSession) -> None:
        event = await audit_service.record(session, "admin.keys.rotated")
        assert (event.request_id, event.ip, event.user_agent) == (None, None, None)


class TestRecordNow:
    async def test_commits_even_when_the_callers_work_rolls_back(self, engine: AsyncEngine) -> None:
        event_type = f"test.failed_login.{uuid4().hex}"
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session:
            # SQLite has a single writer: the independent commit must come before the
            # caller's own write, as it does in a failed login (which writes nothing).
            await audit_service.record_now(sessionmaker, event_type, reason="bad_password")
            await audit_service.record(session, event_type, reason="rolled_back")
            await session.rollback()
        events = await _events(engine, event_type)
        assert [(e.reason, e.success) for e in events] == [("bad_password", False)]

    async def test_events_sort_by_time(self, engine: AsyncEngine) -> None:
        event_type = f"test.order.{uuid4().hex}"
        sessionmaker = create_sessionmaker(engine)
        for reason in ("first", "second", "third"):
            await audit_service.record_now(sessionmaker, event_type, reason=reason)
        async with sessionmaker() as session:
            result = await session.exec(
                select(AuditEvent)
                .where(AuditEvent.event_type == event_type)
                .order_by(col(AuditEvent.occurred_at))
            )
            assert [e.reason for e in result.all()] == ["first", "second", "third"]


class TestRecordFailure:
    async def test_ends_the_callers_transaction_and_commits_on_its_own(
        self, engine: AsyncEngine
    ) -> None:
        event_type = f"test.failed.{uuid4().hex}"
        user_id = uuid4()
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session:
            # The caller's transaction holds the write lock (SQLite) and the chain's
            # append lock (PostgreSQL): without the rollback the audit commit would wait.
            await audit_service.record(session, event_type, reason="rolled_back")
            async with asyncio.timeout(10):
                event = await audit_service.record_failure(
                    session, sessionmaker, event_type, user_id=user_id, reason="bad_password"
                )
            assert not session.in_transaction()
        events = await _events(engine, event_type)
        assert [(e.id, e.reason, e.success) for e in events] == [(event.id, "bad_password", False)]
        assert (events[0].actor_id, events[0].target_type, events[0].target_id) == (
            user_id,
            "user",
            str(user_id),
        )


class TestScrubbing:
    async def test_secrets_never_reach_data_or_reason(self, session: AsyncSession) -> None:
        jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
        event = await audit_service.record(
            session,
            "test.scrubbed",
            reason=f"bad {jwt}",
            data={
                "password": "hunter2-hunter2",
                "nested": {"refresh_token": "abc", "totp_code": "123456", "ok": "kept"},
                "items": ["$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", f"Bearer {jwt}"],
                "rehashed": True,
            },
        )
        assert event.reason == "bad [redacted]"
        assert event.data == {
            "password": "[redacted]",
            "nested": {"refresh_token": "[redacted]", "totp_code": "[redacted]", "ok": "kept"},
            "items": ["[redacted]", "[redacted]"],
            "rehashed": True,
        }

    async def test_data_is_stored_as_json_reads_it_back(self, session: AsyncSession) -> None:
        when = uuid4()
        event = await audit_service.record(session, "test.json", data={"id": when, "t": (1, 2)})
        assert event.data == {"id": str(when), "t": [1, 2]}


class TestLogLine:
    async def test_committed_events_are_logged_with_their_fields(
        self, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
    ) -> None:
        event_type = f"test.logged.{uuid4().hex}"
        async with create_sessionmaker(engine)() as session:
            await audit_service.record(session, event_type, data={"password": "hunter2"})
            assert event_type not in capsys.readouterr().out  # not before the commit
            await session.commit()
        out = capsys.readouterr().out
        assert "audit.event" in out
        assert event_type in out
        assert "seq=" in out
        assert "hunter2" not in out

    async def test_rolled_back_events_are_not_logged(
        self, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
    ) -> None:
        event_type = f"test.unlogged.{uuid4().hex}"
        async with create_sessionmaker(engine)() as session:
            await audit_service.record(session, event_type)
            await session.rollback()
            await session.commit()
        assert event_type not in capsys.readouterr().out
