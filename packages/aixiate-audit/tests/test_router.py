import asyncio
from collections.abc import Callable
from datetime import timedelta
from uuid import uuid4

import httpx
from aixiate_audit import service as audit_service
from aixiate_core.db import create_sessionmaker, utc_now
from sqlalchemy.ext.asyncio import AsyncEngine

EVENTS = "/api/v1/audit/events"

type Login = Callable[..., dict[str, str]]


async def _seed(engine: AsyncEngine, count: int, **fields: object) -> str:
    event_type = f"test.query.{uuid4().hex[:12]}"
    sessionmaker = create_sessionmaker(engine)
    for n in range(count):
        await audit_service.record_now(
            sessionmaker,
            event_type,
            data={"n": n},
            **fields,  # type: ignore[arg-type]
        )
    return event_type


async def _all_pages(
    client: httpx.AsyncClient, headers: dict[str, str], params: dict[str, str | int]
) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    cursor: str | None = None
    while True:
        query = dict(params) | ({"cursor": cursor} if cursor else {})
        response = await client.get(EVENTS, params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        if (cursor := body["next_cursor"]) is None:
            return items


class TestAccess:
    async def test_non_admins_get_403_everywhere(
        self, client: httpx.AsyncClient, login: Login
    ) -> None:
        user = login()
        for path in (EVENTS, f"{EVENTS}/{uuid4()}", "/api/v1/audit/verify"):
            response = await client.get(path, headers=user)
            assert response.status_code == 403
            assert response.json()["code"] == "forbidden"

    async def test_anonymous_callers_get_401(self, client: httpx.AsyncClient) -> None:
        assert (await client.get(EVENTS)).status_code == 401


class TestQuery:
    async def test_filters_and_event_shape(
        self, client: httpx.AsyncClient, login: Login, engine: AsyncEngine
    ) -> None:
        actor = uuid4()
        event_type = await _seed(engine, 3, actor_id=actor, target_type="user", target_id="t-1")
        admin = login(admin=True)
        response = await client.get(
            EVENTS, params={"event_type": event_type, "actor_id": str(actor)}, headers=admin
        )
        body = response.json()
        assert [item["data"]["n"] for item in body["items"]] == [2, 1, 0]  # newest first
        assert body["next_cursor"] is None
        assert set(body["items"][0]) == {
            "id", "occurred_at", "event_type", "actor_id", "target_type", "target_id", "ip",
            "user_agent", "request_id", "success", "reason", "data",
        }  # fmt: skip
        for params, expected in (
            ({"target_id": "t-1"}, 3),
            ({"target_id": "t-2"}, 0),
            ({"success": "true"}, 0),
            ({"success": "false"}, 3),
            ({"since": (utc_now() + timedelta(hours=1)).isoformat()}, 0),
            ({"until": (utc_now() + timedelta(hours=1)).isoformat()}, 3),
            ({"event_type": event_type.rsplit(".", 1)[0] + ".*"}, 3),
        ):
            page = await client.get(EVENTS, params={"actor_id": str(actor)} | params, headers=admin)
            assert len(page.json()["items"]) == expected, params

    async def test_request_id_filter(self, client: httpx.AsyncClient, login: Login) -> None:
        admin = login(admin=True)
        response = await client.get(EVENTS, params={"request_id": "none-such"}, headers=admin)
        assert response.json() == {"items": [], "next_cursor": None}

    async def test_bad_cursor_and_naive_times_are_rejected(
        self, client: httpx.AsyncClient, login: Login
    ) -> None:
        admin = login(admin=True)
        bad = await client.get(EVENTS, params={"cursor": "nope"}, headers=admin)
        assert (bad.status_code, bad.json()["code"]) == (400, "invalid_cursor")
        naive = await client.get(EVENTS, params={"since": "2026-01-01T00:00:00"}, headers=admin)
        assert naive.status_code == 422
        big = await client.get(EVENTS, params={"limit": 201}, headers=admin)
        assert big.status_code == 422

    async def test_one_event_and_404(
        self, client: httpx.AsyncClient, login: Login, engine: AsyncEngine
    ) -> None:
        admin = login(admin=True)
        event_type = await _seed(engine, 1)
        listed = (await client.get(EVENTS, params={"event_type": event_type}, headers=admin)).json()
        event_id = listed["items"][0]["id"]
        one = await client.get(f"{EVENTS}/{event_id}", headers=admin)
        assert one.json() == listed["items"][0]
        missing = await client.get(f"{EVENTS}/{uuid4()}", headers=admin)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"


class TestPagination:
    async def test_every_event_exactly_once_while_new_ones_are_written(
        self, client: httpx.AsyncClient, login: Login, engine: AsyncEngine
    ) -> None:
        admin = login(admin=True)
        event_type = await _seed(engine, 45)
        before = await _all_pages(client, admin, {"event_type": event_type, "limit": 200})
        sessionmaker = create_sessionmaker(engine)
        stop = asyncio.Event()

        async def writer() -> None:
            while not stop.is_set():
                await audit_service.record_now(sessionmaker, event_type, data={"late": True})
                await asyncio.sleep(0)

        task = asyncio.create_task(writer())
        try:
            paged = await _all_pages(client, admin, {"event_type": event_type, "limit": 4})
        finally:
            stop.set()
            await task
        ids = [item["id"] for item in paged]
        assert len(ids) == len(set(ids))
        assert {item["id"] for item in before} <= set(ids)


class TestVerify:
    async def test_reports_an_intact_chain(
        self, client: httpx.AsyncClient, login: Login, engine: AsyncEngine
    ) -> None:
        await _seed(engine, 3)
        response = await client.get("/api/v1/audit/verify", headers=login(admin=True))
        body = response.json()
        assert (body["ok"], body["first_bad_id"]) == (True, None)
        assert body["checked"] >= 3
