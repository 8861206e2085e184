"""How fast the audit query API answers over 1,000,000 events on PostgreSQL.

Creates its own database on the server (``--server``, trust auth, 127.0.0.1 only),
migrates it (so the table is partitioned by month, exactly as deployed), seeds
``--events`` events spread over the last eleven months with COPY (chained like the
service chains them), runs ANALYZE, and times the queries the routes run, through the
service's own repository: filtered first pages, a deep keyset page and a user's
security events. Prints one line per query (median and p95 of ``--repeat`` runs, in ms)
and a JSON summary. Drops the database unless ``--keep``.

    uv run python bench/audit_query.py                   # 1,000,000 events, ~2 minutes
    uv run python bench/audit_query.py --events 100000   # quicker

Not a test: nothing runs it in CI.
"""

import argparse
import asyncio
import json
import random
import secrets
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from aixiate_api import migrations
from aixiate_audit import retention
from aixiate_audit.chain import GENESIS_HASH, compute_hash
from aixiate_audit.models import AuditEvent
from aixiate_audit.repository import AuditRepository, Cursor, EventFilter
from aixiate_core.db import create_sessionmaker
from sqlalchemy import func, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import col, select

EVENT_TYPES = [
    ("auth.login.succeeded", 0.45),
    ("auth.refresh.succeeded", 0.25),
    ("auth.login.failed", 0.15),
    ("auth.logout", 0.06),
    ("user.updated", 0.04),
    ("auth.password.changed", 0.02),
    ("admin.user.updated", 0.02),
    ("security.rate_limited", 0.01),
]
COLUMNS = [
    "id", "occurred_at", "seq", "prev_hash", "hash", "event_type", "actor_id", "target_type",
    "target_id", "ip", "user_agent", "request_id", "success", "reason", "data",
]  # fmt: skip


def _events(count: int, users: list[uuid.UUID], chunk: int) -> Iterator[list[tuple[Any, ...]]]:
    """Chained rows, ``chunk`` at a time (a million ORM objects would not fit comfortably)."""
    rng = random.Random(42)  # noqa: S311 - synthetic data
    now = datetime.now(UTC)
    start = now - timedelta(days=330)
    step = (now - start) / count
    types, weights = zip(*EVENT_TYPES, strict=True)
    rows: list[tuple[Any, ...]] = []
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        event_type = rng.choices(types, weights)[0]
        user = rng.choice(users)
        event = SimpleNamespace(
            id=uuid.uuid4(),
            occurred_at=start + step * seq,
            seq=seq,
            prev_hash=prev,
            event_type=event_type,
            actor_id=user,
            target_type="user",
            target_id=str(user),
            ip=f"198.51.{rng.randrange(256)}.{rng.randrange(256)}",
            user_agent="bench/1.0",
            request_id=secrets.token_hex(16),
            success=event_type != "auth.login.failed",
            reason="bad_password" if event_type == "auth.login.failed" else None,
            data={"n": seq},
            hash="",
        )
        event.hash = prev = compute_hash(event)
        rows.append((*(getattr(event, name) for name in COLUMNS[:-1]), json.dumps(event.data)))
        if len(rows) == chunk:
            yield rows
            rows = []
    if rows:
        yield rows


async def _seed(url: str, count: int, users: list[uuid.UUID]) -> float:
    engine = create_async_engine(url)
    async with create_sessionmaker(engine)() as session, session.begin():
        month = datetime.now(UTC) - timedelta(days=335)
        while month < datetime.now(UTC):
            await retention.ensure_partitions(session, month, 0)
            month += timedelta(days=28)
    await engine.dispose()
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    started = time.perf_counter()
    conn = await asyncpg.connect(plain)
    try:
        # COPY is binary: jsonb's binary form is a version byte, then the text.
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda text: b"\x01" + text.encode(),
            decoder=lambda raw: json.loads(raw[1:]),
            schema="pg_catalog",
            format="binary",
        )
        for rows in _events(count, users, 100_000):
            await conn.copy_records_to_table("audit_event", records=rows, columns=COLUMNS)
        await conn.execute("ANALYZE audit_event")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _time(run: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float]:
    await run()  # warm the cache and the plan
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


async def _measure(url: str, users: list[uuid.UUID], repeat: int) -> dict[str, Any]:
    engine = create_async_engine(url)
    sessionmaker = create_sessionmaker(engine)
    results: dict[str, Any] = {}
    user = users[7]
    async with sessionmaker() as session:
        repo = AuditRepository(session)
        some = (await repo.list_page(EventFilter(), limit=1)).events[0]
        # The cursor of a page 90 % of the way down the log (newest first; found once,
        # untimed): occurred_at grows with seq, so that is the event at seq = total / 10.
        head = (await session.exec(select(func.max(AuditEvent.seq)))).one() or 1
        deep = (
            await session.exec(select(AuditEvent).where(col(AuditEvent.seq) == max(1, head // 10)))
        ).one()
        deep_cursor = Cursor(deep.occurred_at, deep.id).encode()
        since = datetime.now(UTC) - timedelta(days=30)
        cases: dict[str, Callable[[], Awaitable[Any]]] = {
            "first page, no filter (50)": lambda: repo.list_page(EventFilter(), limit=50),
            "event_type=auth.password.changed": lambda: repo.list_page(
                EventFilter(event_type="auth.password.changed"), limit=50
            ),
            "event_type prefix admin.*": lambda: repo.list_page(
                EventFilter(event_type="admin.*"), limit=50
            ),
            "actor_id=<user>": lambda: repo.list_page(EventFilter(actor_id=user), limit=50),
            "target_id=<user>": lambda: repo.list_page(EventFilter(target_id=str(user)), limit=50),
            "request_id=<one>": lambda: repo.list_page(
                EventFilter(request_id=some.request_id), limit=50
            ),
            "event_type+success=false+since 30d": lambda: repo.list_page(
                EventFilter(event_type="auth.login.failed", success=False, since=since), limit=50
            ),
            "security events of a user (actor OR target)": lambda: repo.list_page(
                EventFilter(about_user=user), limit=50
            ),
            "deep keyset page (90 % down), no filter": lambda: repo.list_page(
                EventFilter(), limit=50, cursor=deep_cursor
            ),
            "deep keyset page (90 % down), event_type": lambda: repo.list_page(
                EventFilter(event_type="auth.logout"), limit=50, cursor=deep_cursor
            ),
        }
        for name, run in cases.items():
            median, p95 = await _time(run, repeat)
            results[name] = {"median_ms": round(median, 2), "p95_ms": round(p95, 2)}
            print(f"{name:48s} median {median:8.2f} ms   p95 {p95:8.2f} ms", flush=True)
    await engine.dispose()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="Keep the database afterwards.")
    args = parser.parse_args()
    server = make_url(args.server)
    if server.host not in ("127.0.0.1", "localhost"):
        raise SystemExit("bench/audit_query.py only runs against 127.0.0.1")
    name = f"aixiate_bench_audit_{secrets.token_hex(4)}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(migrations.upgrade_url, url)
        users = [uuid.uuid4() for _ in range(args.users)]
        seconds = await _seed(url, args.events, users)
        print(f"seeded {args.events:,} events in {seconds:.1f} s (COPY, chained)", flush=True)
        results = await _measure(url, users, args.repeat)
        print(json.dumps({"events": args.events, "users": args.users, "queries": results}))
    finally:
        if not args.keep:
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
