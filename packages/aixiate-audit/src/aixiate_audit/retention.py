"""Retention of the audit log: monthly partitions on PostgreSQL, row deletes elsewhere.

On PostgreSQL the migration creates ``audit_event`` range-partitioned by month on
``occurred_at`` (partitions ``audit_event_pYYYYMM``, and ``audit_event_default`` for an
event whose month has none). :func:`ensure_partitions` keeps the next months ready (and
moves a month's strays out of the default partition when it creates the month), and
:func:`prune` drops whole partitions whose month ended before the retention cutoff,
which costs the same for a million rows as for ten, leaves no dead tuples behind, and
needs no VACUUM. Elsewhere (SQLite, or a table built with ``create_all``) it deletes rows.

The chain stays verifiable: ``occurred_at`` never decreases along ``seq``, so the dropped
events are always the oldest ones of the chain, and verification starts at the oldest
kept event. The newest event is never pruned, so the chain never restarts.

Both need more than INSERT/SELECT on the table: run them as the table's owner.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from aixiate_core.housekeeping import PurgeJob
from sqlalchemy import func, text
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_audit import service as audit_service
from aixiate_audit.models import TABLE_NAME, AuditEvent
from aixiate_audit.settings import AuditSettings

log = structlog.get_logger()

_PARTITION = re.compile(rf"^{TABLE_NAME}_p(\d{{4}})(\d{{2}})$")
#: Where an event goes when its month has no partition (created by a migration).
DEFAULT_PARTITION = f"{TABLE_NAME}_default"


@dataclass(frozen=True, slots=True)
class PruneResult:
    cutoff: datetime
    rows_deleted: int = 0
    partitions_dropped: tuple[str, ...] = ()


def month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"{TABLE_NAME}_p{start.year:04d}{start.month:02d}"


async def _ddl(session: AsyncSession, statement: str) -> None:
    connection = await session.connection()
    await connection.exec_driver_sql(statement)


async def is_partitioned(session: AsyncSession) -> bool:
    if session.get_bind().dialect.name != "postgresql":
        return False
    found = await session.exec(
        select(text("1"))
        .select_from(text("pg_partitioned_table pt"))
        .where(text("pt.partrelid = to_regclass(:table)")),
        params={"table": TABLE_NAME},
    )
    return found.first() is not None


async def partitions(session: AsyncSession) -> dict[str, datetime]:
    """Our monthly partitions by name, with the first instant of their month."""
    rows = await session.exec(
        select(text("c.relname"))
        .select_from(text("pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"))
        .where(text("i.inhparent = to_regclass(:table)")),
        params={"table": TABLE_NAME},
    )
    found: dict[str, datetime] = {}
    for name in rows.all():
        if match := _PARTITION.match(str(name)):
            found[str(name)] = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
    return found


async def _has_default(session: AsyncSession) -> bool:
    found = await session.exec(
        select(text("1")).where(text("to_regclass(:default) IS NOT NULL")),
        params={"default": DEFAULT_PARTITION},
    )
    return found.first() is not None


async def _create_partition(
    session: AsyncSession, name: str, start: datetime, end: datetime
) -> None:
    """Creates a month's partition, first moving that month's events out of the default
    partition, where they landed while the month had none (PostgreSQL refuses to create
    a partition whose rows sit in the default). The rows move verbatim: the chain holds."""
    # Names and bounds are computed here from dates and constants, never from input.
    create = (
        f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{TABLE_NAME}" '
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )
    month = {"start": start, "end": end}
    in_month = "occurred_at >= :start AND occurred_at < :end"
    connection = await session.connection()
    stranded = (
        await _has_default(session)
        and (
            await connection.execute(
                text(f'SELECT 1 FROM "{DEFAULT_PARTITION}" WHERE {in_month} LIMIT 1'),  # noqa: S608
                month,
            )
        ).first()
        is not None
    )
    if not stranded:
        await _ddl(session, create)
        return
    await _ddl(session, f'ALTER TABLE "{TABLE_NAME}" DETACH PARTITION "{DEFAULT_PARTITION}"')
    await _ddl(session, create)
    await connection.execute(
        text(
            f'INSERT INTO "{TABLE_NAME}" '  # noqa: S608
            f'SELECT * FROM "{DEFAULT_PARTITION}" WHERE {in_month}'
        ),
        month,
    )
    await connection.execute(
        text(f'DELETE FROM "{DEFAULT_PARTITION}" WHERE {in_month}'),  # noqa: S608
        month,
    )
    await _ddl(
        session, f'ALTER TABLE "{TABLE_NAME}" ATTACH PARTITION "{DEFAULT_PARTITION}" DEFAULT'
    )
    log.warning("audit.partition.rows_moved", partition=name)


async def ensure_partitions(session: AsyncSession, now: datetime, months_ahead: int) -> list[str]:
    """Creates the partitions of the current month and ``months_ahead`` after it that do
    not exist yet; returns their names. Does nothing on an unpartitioned table."""
    if not await is_partitioned(session):
        return []
    existing = await partitions(session)
    created = []
    start = month_start(now)
    for _ in range(months_ahead + 1):
        end = next_month(start)
        name = partition_name(start)
        if name not in existing:
            await _create_partition(session, name, start, end)
            created.append(name)
        start = end
    if created:
        log.info("audit.partitions.created", partitions=created)
    return created


async def prune(session: AsyncSession, now: datetime, retention_days: int) -> PruneResult:
    """Removes events older than ``retention_days`` (whole months on a partitioned
    table: a month goes once all of it is older) and audits that it did."""
    cutoff = now - timedelta(days=retention_days)
    head = (
        await session.exec(
            select(AuditEvent.seq, AuditEvent.occurred_at)
            .order_by(col(AuditEvent.seq).desc())
            .limit(1)
        )
    ).first()
    if head is None:
        return PruneResult(cutoff=cutoff)
    head_seq, head_time = head
    if await is_partitioned(session):
        dropped = []
        for name, start in sorted((await partitions(session)).items()):
            end = next_month(start)
            # Never the month of the newest event: the chain must not restart.
            if end <= cutoff and end <= head_time:
                await _ddl(session, f'DROP TABLE "{name}"')
                dropped.append(name)
        strays = 0
        if await _has_default(session):
            # Stray old events in the default partition go by row (never the newest).
            connection = await session.connection()
            stray = await connection.execute(
                text(
                    f'DELETE FROM "{DEFAULT_PARTITION}" '  # noqa: S608
                    "WHERE occurred_at < :cutoff AND seq < :head"
                ),
                {"cutoff": cutoff, "head": head_seq},
            )
            strays = stray.rowcount
        result = PruneResult(cutoff=cutoff, rows_deleted=strays, partitions_dropped=tuple(dropped))
    else:
        # By seq, not by time: everything before the oldest event that is still kept.
        keep_from = (
            await session.exec(
                select(func.min(AuditEvent.seq)).where(col(AuditEvent.occurred_at) >= cutoff)
            )
        ).one()
        boundary = head_seq if keep_from is None else keep_from
        deleted = await session.exec(delete(AuditEvent).where(col(AuditEvent.seq) < boundary))
        result = PruneResult(cutoff=cutoff, rows_deleted=deleted.rowcount)
    if result.rows_deleted or result.partitions_dropped:
        await audit_service.record(
            session,
            "audit.pruned",
            target_type="audit_log",
            data={
                "cutoff": cutoff.isoformat(),
                "retention_days": retention_days,
                "rows_deleted": result.rows_deleted,
                "partitions_dropped": list(result.partitions_dropped),
            },
        )
    log.info(
        "audit.pruned",
        cutoff=cutoff.isoformat(),
        rows_deleted=result.rows_deleted,
        partitions_dropped=list(result.partitions_dropped),
    )
    return result


def purge_jobs(settings: AuditSettings) -> dict[str, PurgeJob]:
    """Housekeeping jobs: partitions ahead, then the prune. Empty when turned off."""
    if not settings.audit_housekeeping_enabled:
        return {}

    async def audit_partitions(session: AsyncSession, now: datetime) -> int:
        return len(await ensure_partitions(session, now, settings.audit_partitions_ahead))

    async def audit_log(session: AsyncSession, now: datetime) -> int:
        result = await prune(session, now, settings.audit_retention_days)
        return result.rows_deleted + len(result.partitions_dropped)

    return {"audit_partitions": audit_partitions, "audit_log": audit_log}
