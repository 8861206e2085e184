"""Small helpers for ``bench/run``: database and Redis set-up and clean-up, seeding,
readiness timing, logins, memory, and the final report.

Run with the bench environment's interpreter: ``python bench/benchtool.py COMMAND ...``.
Every network target is 127.0.0.1 (or localhost); anything else is refused.
"""

import argparse
import asyncio
import http.client
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})


def _require_local(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in LOCAL_HOSTS:
        sys.exit(f"benchtool: refusing non-local target {host!r} (only 127.0.0.1)")


# --- ports, database, Redis ------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _autocommit(server_url: str, statement: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


def _check_db_name(name: str) -> str:
    if not name.replace("_", "").isalnum() or not name.startswith("aixiate_bench_"):
        sys.exit(f"benchtool: unexpected database name {name!r}")
    return name


def db_create(server_url: str, name: str) -> None:
    _require_local(server_url)
    asyncio.run(_autocommit(server_url, f'CREATE DATABASE "{_check_db_name(name)}"'))


def db_drop(server_url: str, name: str) -> None:
    _require_local(server_url)
    statement = f'DROP DATABASE IF EXISTS "{_check_db_name(name)}" WITH (FORCE)'
    asyncio.run(_autocommit(server_url, statement))


async def _redis_clean(url: str, prefix: str) -> int:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(await client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(await client.delete(*batch))
    finally:
        await client.aclose()
    return deleted


def redis_clean(url: str, prefix: str) -> None:
    _require_local(url)
    if not prefix.startswith("aixiate_bench_"):
        sys.exit(f"benchtool: unexpected Redis key prefix {prefix!r}")
    print(asyncio.run(_redis_clean(url, prefix)))


# --- seeding ---------------------------------------------------------------------------


async def _seed(emails: Sequence[str], password: str) -> None:
    # Imported here: the other commands must not need the service's packages.
    from aixiate_core.db import create_engine, create_sessionmaker
    from aixiate_core.settings import Settings
    from aixiate_users.models import User
    from aixiate_users.passwords import Passwords
    from aixiate_users.repository import normalize_email
    from aixiate_users.settings import UsersSettings

    settings = Settings()
    # The same AIXIATE_ARGON2_* as the service, so logins never trigger a re-hash.
    passwords = Passwords(UsersSettings())
    try:
        password_hash = await passwords.hash(password)
    finally:
        passwords.shutdown()
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            for email in emails:
                session.add(
                    User(
                        email=normalize_email(email),
                        password_hash=password_hash,
                        full_name="Bench User",
                        is_verified=True,
                    )
                )
    finally:
        await engine.dispose()


def seed(pattern: str, count: int, password: str) -> None:
    emails = [pattern.format(i) for i in range(count)]
    asyncio.run(_seed(emails, password))
    print(f"seeded {count} users ({emails[0]} .. {emails[-1]})")


# --- HTTP ------------------------------------------------------------------------------


def _request(
    url: str, method: str = "GET", body: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, bytes]:
    parts = urlsplit(url)
    if parts.hostname not in LOCAL_HOSTS or parts.port is None:
        sys.exit(f"benchtool: refusing {url!r} (only 127.0.0.1 with a port)")
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, parts.path or "/", body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(url: str, since_ns: int, timeout: float, pid: int | None) -> None:
    """Polls ``url`` every 5 ms; prints milliseconds from ``since_ns`` (a
    ``date +%s%N`` taken just before the process was started) to the first 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None and not Path(f"/proc/{pid}").exists():
            sys.exit(f"benchtool: process {pid} exited before {url} answered 200")
        try:
            status, _ = _request(url)
        except OSError:
            status = 0
        if status == 200:
            print(f"{(time.time_ns() - since_ns) / 1e6:.0f}")
            return
        time.sleep(0.005)
    sys.exit(f"benchtool: {url} did not answer 200 within {timeout:.0f} s")


def login(base_url: str, email: str, password: str) -> None:
    status, body = _request(
        base_url + "/api/v1/auth/login", "POST", {"email": email, "password": password}
    )
    if status != 200:
        sys.exit(f"benchtool: login of {email} answered {status}: {body[:300]!r}")
    print(json.loads(body)["access_token"])


def get(url: str, token: str | None) -> None:
    status, body = _request(url, token=token)
    if status != 200:
        sys.exit(f"benchtool: GET {url} answered {status}: {body[:300]!r}")
    sys.stdout.write(body.decode())


def rss_kib(pid: int) -> None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            print(line.split()[1])
            return
    sys.exit(f"benchtool: no VmRSS for pid {pid}")


# --- report ----------------------------------------------------------------------------

#: Targets from the performance issue.
TARGET_THROUGHPUT = 0.50
TARGET_P50_FACTOR = 2.0
TARGET_P99_FACTOR = 4.0
TARGET_LOGIN = 0.60


def _wrk_result(run_dir: Path, name: str) -> dict[str, Any] | None:
    path = run_dir / f"{name}.wrk.txt"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return result
    return None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _read_meta(path: Path) -> dict[str, Any]:
    """``key=value`` lines written by bench/run; numbers become numbers."""
    meta: dict[str, Any] = {}
    if not path.exists():
        return meta
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    return meta


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def section(self, title: str) -> None:
        self.rows.append((title, "", "", ""))

    def add(self, label: str, value: str, target: str = "", verdict: str = "") -> None:
        self.rows.append(("  " + label, value, target, verdict))

    def render(self) -> str:
        header = ("figure", "value", "target", "")
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(4)]
        line = "-" * (sum(widths) + 6)
        out = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
        for row in self.rows:
            if not row[1] and not row[2]:
                out.append(row[0])
                continue
            out.append(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        return "\n".join(line.rstrip() for line in out)


def _errors(result: dict[str, Any] | None) -> int | None:
    if result is None:
        return None
    return int(result["non2xx"]) + int(result["socket_errors"])


def _ok_rps(result: dict[str, Any] | None) -> float | None:
    """2xx responses per second (wrk's non-2xx count covers 4xx/5xx)."""
    if result is None or not result["duration_s"]:
        return None
    return (int(result["requests"]) - int(result["non2xx"])) / float(result["duration_s"])


def report(run_dir: Path, results_dir: Path) -> None:
    meta = _read_meta(run_dir / "meta.txt")
    argon = _read_json(run_dir / "argon2.json")
    svc_tp = _wrk_result(run_dir, "throughput_service")
    ceil_tp = _wrk_result(run_dir, "throughput_ceiling")
    svc_idle = _wrk_result(run_dir, "latency_service_idle")
    ceil_idle = _wrk_result(run_dir, "latency_ceiling_idle")
    svc_loaded = _wrk_result(run_dir, "latency_service_loaded")
    login_mixed = _wrk_result(run_dir, "login_during_latency")
    login_only = _wrk_result(run_dir, "login_only")

    table = Table()

    table.section(
        f"1. GET /api/v1/users/me throughput, {meta.get('throughput_connections')} connections, "
        f"{meta.get('duration')} s each"
    )
    svc_rps, ceil_rps = _ok_rps(svc_tp), _ok_rps(ceil_tp)
    table.add("service requests/s (2xx)", _fmt(svc_rps) + _count(svc_tp))
    table.add("ceiling app requests/s (2xx)", _fmt(ceil_rps) + _count(ceil_tp))
    ratio = _ratio(svc_rps, ceil_rps)
    table.add(
        "service / ceiling",
        _fmt(None if ratio is None else ratio * 100, ".1f", " %"),
        f">= {TARGET_THROUGHPUT:.0%}",
        "" if ratio is None else _verdict(ratio >= TARGET_THROUGHPUT),
    )
    for label, result in (("service", svc_tp), ("ceiling", ceil_tp)):
        table.add(
            f"{label} errors (non-2xx + socket)",
            "n/a"
            if result is None
            else f"{_errors(result)} "
            f"({result['non2xx']} non-2xx, {result['socket_errors']} socket)",
            "0" if label == "service" else "",
            "" if result is None or label != "service" else _verdict(_errors(result) == 0),
        )
        if result is not None:
            table.add(
                f"{label} latency p50 / p99",
                f"{result['p50_ms']:.2f} / {result['p99_ms']:.2f} ms",
            )

    table.section(
        f"2. GET /users/me latency, {meta.get('latency_connections')} connections, "
        f"{meta.get('duration')} s; login load {meta.get('login_connections')} connections"
    )
    if svc_idle is not None:
        table.add("service p50 / p99, no login load", _latency(svc_idle))
    if svc_loaded is not None:
        table.add("service p50 / p99, under login load", _latency(svc_loaded))
    if ceil_idle is not None:
        table.add("(ceiling app p50 / p99, no load)", _latency(ceil_idle))
    for pct, factor in (("p50", TARGET_P50_FACTOR), ("p99", TARGET_P99_FACTOR)):
        loaded = None if svc_loaded is None else float(svc_loaded[f"{pct}_ms"])
        idle = None if svc_idle is None else float(svc_idle[f"{pct}_ms"])
        r = _ratio(loaded, idle)
        table.add(
            f"{pct} loaded / unloaded",
            _fmt(r, ".2f", "x"),
            f"<= {factor:.0f}x",
            "" if r is None else _verdict(r <= factor),
        )
    for label, result in (("/users/me", svc_idle), ("/users/me under load", svc_loaded)):
        table.add(
            f"{label} errors (non-2xx + socket)",
            _fmt_errors(result),
            "0",
            "" if result is None else _verdict(_errors(result) == 0),
        )
    if login_mixed is not None:
        table.add(
            "logins/s during the loaded window",
            _fmt(_ok_rps(login_mixed)),
        )
        table.add("login errors during the loaded window", _fmt_errors(login_mixed))

    workers = argon.get("hash_workers")
    median_ms = argon.get("verify_median_ms")
    table.section(
        f"3. POST /api/v1/auth/login throughput, {meta.get('login_connections')} connections, "
        f"{meta.get('duration')} s"
    )
    table.add(
        "argon2 parameters",
        f"argon2id t={argon.get('time_cost')} m={argon.get('memory_kib')} KiB "
        f"p={argon.get('parallelism')}, hash workers={workers}",
    )
    table.add(
        "argon2 verify alone, median (min..max)",
        f"{_fmt(median_ms, '.2f')} ms ({_fmt(argon.get('verify_min_ms'), '.2f')}"
        f"..{_fmt(argon.get('verify_max_ms'), '.2f')}, n={argon.get('samples')})",
    )
    ceiling_lps = argon.get("ceiling_logins_per_s")
    table.add("argon2 ceiling = workers / median", f"{_fmt(ceiling_lps)} logins/s")
    parallel = argon.get("parallel_verifies_per_s")
    if parallel is not None:
        table.add(f"(argon2 verifies/s measured with {workers} threads)", f"{_fmt(parallel)} /s")
    login_rps = _ok_rps(login_only)
    table.add("service logins/s (200)", _fmt(login_rps) + _count(login_only))
    lr = _ratio(login_rps, ceiling_lps)
    table.add(
        "service / argon2 ceiling",
        _fmt(None if lr is None else lr * 100, ".1f", " %"),
        f">= {TARGET_LOGIN:.0%}",
        "" if lr is None else _verdict(lr >= TARGET_LOGIN),
    )
    if login_only is not None:
        table.add("login latency p50 / p99", _latency(login_only))
    table.add(
        "login errors (non-2xx + socket)",
        _fmt_errors(login_only),
        "0",
        "" if login_only is None else _verdict(_errors(login_only) == 0),
    )

    table.section("4. Startup and memory (one uvicorn worker)")
    table.add(
        "service: process start -> first 200 /health/ready",
        _fmt(meta.get("service_startup_ms"), ".0f", " ms"),
    )
    booted = _uvicorn_started_ms(run_dir / "service.log", meta.get("service_start_ns"))
    table.add(
        "  of which until uvicorn's 'Started server process'",
        _fmt(booted, ".0f", " ms (imports, create_app)"),
    )
    table.add("service idle RSS after warm-up", _kib(meta.get("service_rss_idle_kib")))
    table.add("service RSS after all load", _kib(meta.get("service_rss_end_kib")))
    table.add(
        "(ceiling app: start -> first 200)", _fmt(meta.get("ceiling_startup_ms"), ".0f", " ms")
    )
    table.add("(ceiling app idle RSS after warm-up)", _kib(meta.get("ceiling_rss_idle_kib")))

    levels = _log_levels(run_dir / "service.log")
    table.section("Service log during the run (JSON lines)")
    table.add(
        "lines by level",
        ", ".join(f"{level} {n}" for level, n in sorted(levels.items())) or "n/a",
        "no error",
        _verdict(not levels.get("error") and not levels.get("critical")),
    )

    stamp = meta.get("timestamp") or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    head = [
        f"Aixiate benchmark {stamp}",
        f"host: {meta.get('cpus')} CPUs, {meta.get('kernel')}; wrk {meta.get('wrk_version')}",
        f"service: {meta.get('service_url')} (AIXIATE_ENV=production, JSON logs to a file, "
        f"PostgreSQL db {meta.get('database')}, Redis prefix {meta.get('redis_prefix')})",
        f"ceiling: {meta.get('ceiling_url')} (FastAPI + joserfc ES256, no DB, no Redis)",
        f"wrk threads: {meta.get('wrk_threads')}; warm-up {meta.get('warmup')} s per target; "
        f"load average before the run: {meta.get('loadavg_start')}, "
        f"after: {meta.get('loadavg_end')}",
        "",
    ]
    text = "\n".join(head) + table.render() + "\n"
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"{stamp}.txt"
    out.write_text(text)
    print(text)
    print(f"written to {out}")


def _count(result: dict[str, Any] | None) -> str:
    if result is None:
        return ""
    return f" ({result['requests']} in {float(result['duration_s']):.1f} s)"


def _uvicorn_started_ms(path: Path, start_ns: Any) -> float | None:
    """From the process start to uvicorn's "Started server process" line: the part of
    the startup spent importing and building the app, before the lifespan runs."""
    if not isinstance(start_ns, int) or not path.exists():
        return None
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if str(entry.get("event", "")).startswith("Started server process"):
                stamp = datetime.fromisoformat(entry["timestamp"])
                return (stamp.timestamp() * 1e9 - start_ns) / 1e6
    return None


def _log_levels(path: Path) -> dict[str, int]:
    """Lines per level of the service's JSON log (non-JSON lines count as "other")."""
    levels: dict[str, int] = {}
    if not path.exists():
        return levels
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                level = str(json.loads(line).get("level", "other"))
            except (json.JSONDecodeError, AttributeError):
                level = "other"
            levels[level] = levels.get(level, 0) + 1
    return levels


def _latency(result: dict[str, Any]) -> str:
    return f"{result['p50_ms']:.2f} / {result['p99_ms']:.2f} ms"


def _fmt_errors(result: dict[str, Any] | None) -> str:
    if result is None:
        return "n/a"
    return f"{_errors(result)} ({result['non2xx']} non-2xx, {result['socket_errors']} socket)"


def _kib(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{int(value) / 1024:.1f} MiB"


def brief(path: Path) -> None:
    """One line about a wrk run, for the progress output."""
    result = _wrk_result(path.parent, path.name.removesuffix(".wrk.txt"))
    if result is None:
        sys.exit(f"benchtool: no BENCH_RESULT line in {path}")
    print(
        f"{_ok_rps(result) or 0:.1f} req/s (2xx), p50 {result['p50_ms']:.2f} ms, "
        f"p99 {result['p99_ms']:.2f} ms, errors {_fmt_errors(result)}"
    )


# --- command line ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchtool")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("free-port")
    for name in ("db-create", "db-drop"):
        p = sub.add_parser(name)
        p.add_argument("server_url")
        p.add_argument("name")
    p = sub.add_parser("redis-clean")
    p.add_argument("url")
    p.add_argument("prefix")
    p = sub.add_parser("seed")
    p.add_argument("--pattern", required=True, help="email pattern with {} for the index")
    p.add_argument("--count", type=int, required=True)
    p = sub.add_parser("wait-ready")
    p.add_argument("url")
    p.add_argument("--since-ns", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--pid", type=int)
    p = sub.add_parser("login")
    p.add_argument("base_url")
    p.add_argument("email")
    p = sub.add_parser("get")
    p.add_argument("url")
    p = sub.add_parser("rss")
    p.add_argument("pid", type=int)
    p = sub.add_parser("brief")
    p.add_argument("path", type=Path)
    p = sub.add_parser("report")
    p.add_argument("run_dir", type=Path)
    p.add_argument("results_dir", type=Path)
    args = parser.parse_args(argv)

    password = os.environ.get("BENCH_PASSWORD", "")
    token = os.environ.get("BENCH_TOKEN")
    match args.command:
        case "free-port":
            print(free_port())
        case "db-create":
            db_create(args.server_url, args.name)
        case "db-drop":
            db_drop(args.server_url, args.name)
        case "redis-clean":
            redis_clean(args.url, args.prefix)
        case "seed":
            seed(args.pattern, args.count, password)
        case "wait-ready":
            wait_ready(args.url, args.since_ns, args.timeout, args.pid)
        case "login":
            login(args.base_url, args.email, password)
        case "get":
            get(args.url, token)
        case "rss":
            rss_kib(args.pid)
        case "brief":
            brief(args.path)
        case "report":
            report(args.run_dir, args.results_dir)


if __name__ == "__main__":
    main()
