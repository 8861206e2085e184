"""In-process CPU cost of the service's hot routes: ``GET /api/v1/users/me`` and
``POST /api/v1/auth/login``.

Not a load test: it drives the assembled ASGI app directly (no socket, no uvicorn), on
the database and Redis the ``AIXIATE_*`` variables name, and reports the event-loop
thread's CPU time per request (argon2 runs on worker threads and is not counted), so a
change on a hot path can be judged in seconds. With ``--profile`` it prints the top of a
cProfile by cumulative and by own time instead.

    createdb ... && AIXIATE_DATABASE_URL=... python -m aixiate_api db upgrade
    AIXIATE_DATABASE_URL=... AIXIATE_REDIS_URL=... AIXIATE_SECRET_KEY=... \
        .venvs/bench/bin/python bench/profile_app.py me|login [--requests N] [--profile] 2>/dev/null

Each run adds one user to the database it is given; use a scratch database.
"""

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TextIO

Message = MutableMapping[str, Any]


async def call(
    app: Callable[..., Awaitable[None]],
    state: dict[str, Any],
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": dict(state),
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def main(route: str, requests: int, profile: bool, out: TextIO) -> None:
    from aixiate_api.app import create_app
    from aixiate_users.models import User
    from aixiate_users.passwords import Passwords
    from aixiate_users.repository import normalize_email
    from aixiate_users.settings import UsersSettings

    os.environ.setdefault("AIXIATE_RATE_LIMIT_ENABLED", "false")
    os.environ.setdefault("AIXIATE_LOG_FORMAT", "json")
    app = create_app()
    password = "profile-" + secrets.token_urlsafe(12)
    email = f"profile-{secrets.token_hex(4)}@example.com"
    passwords = Passwords(UsersSettings())
    async with app.router.lifespan_context(app) as state:
        async with state["sessionmaker"]() as session, session.begin():
            session.add(
                User(
                    email=normalize_email(email),
                    password_hash=await passwords.hash(password),
                    is_verified=True,
                )
            )
        passwords.shutdown()
        ctype = [(b"content-type", b"application/json")]
        status, body = await call(
            app,
            state,
            "POST",
            "/api/v1/auth/login",
            ctype,
            json.dumps({"email": email, "password": password}).encode(),
        )
        assert status == 200, body
        token = json.loads(body)["access_token"]
        auth = [(b"authorization", f"Bearer {token}".encode())]
        for _ in range(200):  # warm caches and pools
            status, body = await call(app, state, "GET", "/api/v1/users/me", auth)
            assert status == 200, body
        login = json.dumps({"email": email, "password": password}).encode()
        targets = {
            "me": ("GET", "/api/v1/users/me", auth, b""),
            "login": ("POST", "/api/v1/auth/login", ctype, login),
        }
        method, path, headers, body = targets[route]
        profiler = cProfile.Profile() if profile else None
        # The best of five rounds: the least disturbed by whatever else runs here.
        best = float("inf")
        for _ in range(1 if profile else 5):
            cpu0 = time.thread_time()
            if profiler:
                profiler.enable()
            for _ in range(requests):
                status, answer = await call(app, state, method, path, headers, body)
                assert status == 200, answer
            if profiler:
                profiler.disable()
            best = min(best, (time.thread_time() - cpu0) / requests)
        print(f"{method} {path}: {best * 1e6:.0f} us of event-loop CPU per request", file=out)
        if profiler:
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("cumulative").print_stats(45)
            stats.sort_stats("tottime").print_stats(35)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("route", choices=["me", "login"])
    parser.add_argument("--requests", type=int, help="per round (default: 3000, login 200)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    # The service's JSON log lines go to stderr; the report to stdout.
    requests = args.requests or (3000 if args.route == "me" else 200)
    asyncio.run(main(args.route, requests, args.profile, sys.stdout))
