from datetime import timedelta

from aixiate_audit import retention
from aixiate_audit import service as audit_service
from aixiate_audit.models import AuditEvent
from aixiate_audit.repository import AuditRepository
from aixiate_audit.settings import AuditSettings
from aixiate_core.db import utc_now
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession


class TestPrune:
    async def test_deletes_what_is_past_retention_and_keeps_a_verifiable_chain(
        self, session: AsyncSession
    ) -> None:
        for n in range(3):
            await audit_service.record(session, "test.old", data={"n": n})
        later = utc_now() + timedelta(days=400)
        result = await retention.prune(session, later, retention_days=365)
        remaining = (await session.exec(select(AuditEvent).order_by(col(AuditEvent.seq)))).all()
        # The newest event stays so the chain goes on; the prune itself is audited.
        assert [e.event_type for e in remaining] == ["test.old", "audit.pruned"]
        assert result.rows_deleted >= 2
        assert remaining[1].data["rows_deleted"] == result.rows_deleted
        assert (await AuditRepository(session).verify_chain()).ok

    async def test_nothing_to_prune_records_nothing(self, session: AsyncSession) -> None:
        await audit_service.record(session, "test.recent")
        result = await retention.prune(session, utc_now(), retention_days=365)
        assert result.rows_deleted == 0
        pruned = await session.exec(
            select(AuditEvent).where(AuditEvent.event_type == "audit.pruned")
        )
        assert pruned.all() == []

    async def test_an_unpartitioned_table_needs_no_partitions(self, session: AsyncSession) -> None:
        assert await retention.ensure_partitions(session, utc_now(), 3) == []


class TestJobs:
    def test_housekeeping_jobs_follow_the_setting(self) -> None:
        on = AuditSettings(_env_file=None)
        off = AuditSettings(audit_housekeeping_enabled=False, _env_file=None)
        assert set(retention.purge_jobs(on)) == {"audit_partitions", "audit_log"}
        assert retention.purge_jobs(off) == {}
        assert on.audit_retention_days == 365


class TestMonths:
    def test_month_arithmetic(self) -> None:
        start = retention.month_start(utc_now().replace(year=2026, month=12, day=31))
        assert retention.next_month(start).isoformat() == "2027-01-01T00:00:00+00:00"
        assert retention.partition_name(start) == "audit_event_p202612"
