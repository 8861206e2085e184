"""Sessions: refresh rotation and reuse detection, listing and revoking, and revocation
that every app instance sees on the very next request."""

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from aixiate_audit.models import AuditEvent
from aixiate_auth.models import AuthSession
from aixiate_auth.settings import AuthSettings
from aixiate_auth.testing import (
    AuthAppFactory,
    AuthAppVariant,
    Login,
    SignIn,
    UserFactory,
    session_id_of,
)
from aixiate_core.db import utc_now
from aixiate_core.settings import Settings
from aixiate_core.store import KeyValueStore
from aixiate_core.testing import Sessions, assert_problem, bearer, serve
from aixiate_core.testing.mail import Mailbox
from aixiate_users.models import User
from aixiate_users.testing import PASSWORD, audit_events
from fastapi import FastAPI
from sqlalchemy import update
from sqlmodel import col

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
LOGOUT_ALL = "/api/v1/auth/logout-all"
SESSIONS = "/api/v1/auth/sessions"
ME = "/api/v1/users/me"
USERS = "/api/v1/users"


def sid_of(pair: dict[str, Any]) -> UUID:
    return session_id_of(pair["access_token"])


async def me(client: httpx.AsyncClient, pair: dict[str, Any]) -> httpx.Response:
    return await client.get(ME, headers=bearer(pair["access_token"]))


async def refresh(client: httpx.AsyncClient, pair: dict[str, Any]) -> httpx.Response:
    return await client.post(REFRESH, json={"refresh_token": pair["refresh_token"]})


async def logged_in(client: httpx.AsyncClient, user: User) -> dict[str, Any]:
    """The token pair of a login of ``user`` through ``client`` (an app of the test's own)."""
    response = await client.post(LOGIN, json={"email": user.email, "password": PASSWORD})
    pair: dict[str, Any] = response.json()
    return pair


#: A last use the app would write over at once, were it not for the touch interval.
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def liveness_key(session_id: UUID) -> str:
    return f"auth:session:{session_id}"


def rejected(response: httpx.Response) -> None:
    assert_problem(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def stored_session(db: Sessions, session_id: UUID) -> AuthSession:
    async with db() as session:
        found = await session.get(AuthSession, session_id)
    assert found is not None
    return found


async def set_session(db: Sessions, session_id: UUID, **values: Any) -> None:
    async with db() as session, session.begin():
        await session.exec(
            update(AuthSession).where(col(AuthSession.id) == session_id).values(**values)
        )


async def refresh_refused(
    db: Sessions, response: httpx.Response, reason: str, user_id: UUID | None
) -> AuditEvent:
    """The request's ``auth.refresh.failed`` event, which outlived its rollback."""
    rejected(response)
    (event,) = await audit_events(db, "auth.refresh.failed", response=response)
    assert (event.success, event.reason, event.actor_id) == (False, reason, user_id)
    assert event.target_id == (str(user_id) if user_id else None)
    assert event.target_type == ("user" if user_id else None)
    body = json.loads(response.request.content)
    assert body["refresh_token"] not in json.dumps(event.model_dump(mode="json"))
    return event


class TestRefresh:
    async def test_rotates_the_refresh_token(self, api: httpx.AsyncClient, sign_in: SignIn) -> None:
        _, (first,) = await sign_in()

        response = await refresh(api, first)

        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        second = response.json()
        assert second["token_type"] == "bearer"
        assert second["refresh_token"] != first["refresh_token"]
        assert second["access_token"] != first["access_token"]
        assert sid_of(second) == sid_of(first)
        assert (await me(api, second)).status_code == 200
        again = await refresh(api, second)
        assert again.status_code == 200, again.text

    async def test_reuse_ends_the_whole_session(
        self, api: httpx.AsyncClient, sign_in: SignIn, db: Sessions, mailbox: Mailbox
    ) -> None:
        user, (first,) = await sign_in(full_name="Grace Hopper")
        sid = sid_of(first)
        second = (await refresh(api, first)).json()

        reused = await refresh(api, first)

        assert_problem(reused, 401, "token_reused")
        assert reused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert "access_token" not in reused.text
        # Every token of the session is dead, the thief's and the owner's alike.
        rejected(await me(api, second))
        rejected(await me(api, first))
        rejected(await refresh(api, second))
        stored = await stored_session(db, sid)
        assert stored.revoked_at is not None
        assert stored.revoke_reason == "refresh_reused"
        (event,) = await audit_events(db, "auth.refresh.reused", about=sid)
        assert event.success is False
        assert event.actor_id == user.id
        assert event.target_type == "session"
        (alert,) = await mailbox.to(user.email, "session_reuse")
        assert "Grace Hopper" in alert.message.text
        # Reuse has its own event, not a second one as a plain refusal.
        assert await audit_events(db, "auth.refresh.failed", response=reused) == []

    async def test_reuse_leaves_the_users_other_sessions_alone(
        self, api: httpx.AsyncClient, sign_in: SignIn
    ) -> None:
        _, (stolen, other) = await sign_in(sessions=2)
        await refresh(api, stolen)

        await refresh(api, stolen)

        assert (await me(api, other)).status_code == 200

    async def test_reuse_after_logout_sends_no_alert(
        self, api: httpx.AsyncClient, sign_in: SignIn, mailbox: Mailbox
    ) -> None:
        user, (first,) = await sign_in()
        second = (await refresh(api, first)).json()
        await api.post(LOGOUT, headers=bearer(second["access_token"]))

        reused = await refresh(api, first)

        assert_problem(reused, 401, "token_reused")
        assert await mailbox.to(user.email, "session_reuse") == []

    async def test_unknown_refresh_token(self, api: httpx.AsyncClient, db: Sessions) -> None:
        response = await api.post(REFRESH, json={"refresh_token": "x" * 43})

        event = await refresh_refused(db, response, "unknown_token", None)
        assert event.data == {}

    async def test_access_token_is_not_a_refresh_token(
        self, api: httpx.AsyncClient, sign_in: SignIn
    ) -> None:
        _, (pair,) = await sign_in()

        response = await api.post(REFRESH, json={"refresh_token": pair["access_token"]})

        # Far longer than any refresh token: refused before any lookup.
        assert_problem(response, 422, "validation_error")

    @pytest.mark.parametrize(
        "body",
        [{}, {"refresh_token": ""}, {"refresh_token": 42}, {"refresh_token": "x" * 300}],
        ids=["missing", "empty", "number", "too-long"],
    )
    async def test_invalid_bodies(self, api: httpx.AsyncClient, body: dict[str, Any]) -> None:
        assert_problem(await api.post(REFRESH, json=body), 422, "validation_error")

    async def test_logged_out_session_cannot_refresh(
        self, api: httpx.AsyncClient, sign_in: SignIn, db: Sessions
    ) -> None:
        user, (pair,) = await sign_in()
        await api.post(LOGOUT, headers=bearer(pair["access_token"]))

        response = await refresh(api, pair)

        event = await refresh_refused(db, response, "session_revoked", user.id)
        assert event.data == {"session_id": str(sid_of(pair))}

    async def test_deactivated_user_cannot_refresh(
        self, api: httpx.AsyncClient, sign_in: SignIn, db: Sessions
    ) -> None:
        user, (pair,) = await sign_in()
        async with db() as session, session.begin():
            await session.exec(update(User).where(col(User.id) == user.id).values(is_active=False))

        response = await refresh(api, pair)

        await refresh_refused(db, response, "inactive", user.id)
        # The rotation rolled back with the request: the token was not spent.
        async with db() as session, session.begin():
            await session.exec(update(User).where(col(User.id) == user.id).values(is_active=True))
        again = await refresh(api, pair)
        assert again.status_code == 200, again.text

    async def test_concurrent_use_of_one_token_lets_exactly_one_through(
        self, api: httpx.AsyncClient, sign_in: SignIn
    ) -> None:
        _, (pair,) = await sign_in()

        responses = await asyncio.gather(
            *(api.post(REFRESH, json={"refresh_token": pair["refresh_token"]}) for _ in range(10))
        )

        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200] + [401] * 9, [r.text for r in responses if r.status_code != 401]
        assert {r.json()["code"] for r in responses if r.status_code == 401} == {"token_reused"}


class TestExpiry:
    async def test_refresh_never_extends_the_absolute_expiry(
        self, api: httpx.AsyncClient, sign_in: SignIn, db: Sessions
    ) -> None:
        _, (pair,) = await sign_in()
        sid = sid_of(pair)
        ends = (utc_now() + timedelta(hours=1)).replace(microsecond=0)
        await set_session(db, sid, expires_at=ends)

        response = await refresh(api, pair)

        assert response.status_code == 200, response.text
        assert 0 < response.json()["refresh_expires_in"] <= 3600
        stored = await stored_session(db, sid)
        assert stored.expires_at == ends
        assert stored.idle_expires_at == ends
        listed = (await api.get(SESSIONS, headers=bearer(response.json()["access_token"]))).json()
        assert [datetime.fromisoformat(item["expires_at"]) for item in listed] == [ends]

    async def test_past_the_absolute_expiry_refresh_is_refused(
        self, api: httpx.AsyncClient, sign_in: SignIn, db: Sessions
    ) -> None:
        user, (pair,) = await sign_in()
        await set_session(db, sid_of(pair), expires_at=utc_now() - timedelta(seconds=1))

        response = await refresh(api, pair)

        await refresh_refused(db, response, "session_expired", user.id)

    async def test_refresh_slides_the_idle_expiry(
        self, api: httpx.AsyncClient, sign_in: SignIn, db: Sessions, auth_settings: AuthSettings
    ) -> None:
        _, (pair,) = await sign_in()
        sid = sid_of(pair)
        soon = utc_now() + timedelta(minutes=10)
        await set_session(db, sid, idle_expires_at=soon)

        response = await refresh(api, pair)

        assert response.status_code == 200, response.text
        stored = await stored_session(db, sid)
        slid = stored.idle_expires_at - soon
        assert slid > timedelta(seconds=auth_settings.refresh_token_ttl_seconds - 3600)
        assert response.json()["refresh_expires_in"] > 3600

    async def test_idle_session_cannot_refresh(
        self, api: httpx.AsyncClient, sign_in: SignIn, db: Sessions
    ) -> None:
        user, (pair,) = await sign_in()
        await set_session(
            db,
            sid_of(pair),
            idle_expires_at=utc_now() - timedelta(seconds=1),
        )

        response = await refresh(api, pair)

        await refresh_refused(db, response, "session_expired", user.id)

    async def test_expired_sessions_are_not_listed(
        self, api: httpx.AsyncClient, sign_in: SignIn, db: Sessions
    ) -> None:
        _, (old, current) = await sign_in(sessions=2)
        await set_session(db, sid_of(old), expires_at=utc_now() - timedelta(seconds=1))

        listed = (await api.get(SESSIONS, headers=bearer(current["access_token"]))).json()

        assert [item["id"] for item in listed] == [str(sid_of(current))]


class TestListSessions:
    async def test_lists_the_callers_active_sessions_and_marks_the_current_one(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        other_user = await make_user()
        pairs = []
        for agent in ("phone/1.0", "laptop/2.0", "tablet/3.0"):
            response = await api.post(
                LOGIN,
                json={"email": user.email, "password": PASSWORD},
                headers={"User-Agent": agent},
            )
            pairs.append(response.json())
        await api.post(LOGIN, json={"email": other_user.email, "password": PASSWORD})

        response = await api.get(SESSIONS, headers=bearer(pairs[1]["access_token"]))

        assert response.status_code == 200, response.text
        listed = response.json()
        assert {item["id"] for item in listed} == {str(sid_of(pair)) for pair in pairs}
        assert {item["user_agent"] for item in listed} == {"phone/1.0", "laptop/2.0", "tablet/3.0"}
        assert {item["ip"] for item in listed} == {"203.0.113.7"}
        current = [item for item in listed if item["current"]]
        assert [item["id"] for item in current] == [str(session_id_of(pairs[1]["access_token"]))]
        assert set(listed[0]) == {
            "id",
            "created_at",
            "last_used_at",
            "expires_at",
            "ip",
            "user_agent",
            "current",
        }

    async def test_needs_a_token(self, api: httpx.AsyncClient) -> None:
        assert_problem(await api.get(SESSIONS), 401, "not_authenticated")

    async def test_twenty_concurrent_logins_make_twenty_sessions(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()

        responses = await asyncio.gather(
            *(api.post(LOGIN, json={"email": user.email, "password": PASSWORD}) for _ in range(20))
        )

        assert [r.status_code for r in responses] == [200] * 20
        ids = {session_id_of(r.json()["access_token"]) for r in responses}
        assert len(ids) == 20
        assert len({r.json()["refresh_token"] for r in responses}) == 20
        listed = await api.get(SESSIONS, headers=bearer(responses[0].json()["access_token"]))
        assert {UUID(item["id"]) for item in listed.json()} == ids
        for response in responses:
            me = await api.get(ME, headers=bearer(response.json()["access_token"]))
            assert me.status_code == 200


class TestRevokeSession:
    async def test_revoked_session_is_refused_at_once(
        self, api: httpx.AsyncClient, sign_in: SignIn, db: Sessions
    ) -> None:
        _, (phone, laptop) = await sign_in(sessions=2)
        phone_sid = sid_of(phone)
        assert (await me(api, phone)).status_code == 200

        response = await api.delete(
            f"{SESSIONS}/{phone_sid}", headers=bearer(laptop["access_token"])
        )

        assert response.status_code == 204, response.text
        rejected(await me(api, phone))
        rejected(await refresh(api, phone))
        assert (await me(api, laptop)).status_code == 200
        listed = (await api.get(SESSIONS, headers=bearer(laptop["access_token"]))).json()
        assert str(phone_sid) not in {item["id"] for item in listed}
        assert (await stored_session(db, phone_sid)).revoke_reason == "user_revoked"
        assert len(await audit_events(db, "auth.session.revoked", about=phone_sid)) == 1

    async def test_revoking_the_current_session(
        self, api: httpx.AsyncClient, sign_in: SignIn
    ) -> None:
        _, (pair,) = await sign_in()
        sid = sid_of(pair)

        response = await api.delete(f"{SESSIONS}/{sid}", headers=bearer(pair["access_token"]))

        assert response.status_code == 204
        rejected(await me(api, pair))

    async def test_another_users_session_is_not_found(
        self, api: httpx.AsyncClient, sign_in: SignIn
    ) -> None:
        _, (mine,) = await sign_in()
        _, (theirs,) = await sign_in()
        their_sid = sid_of(theirs)

        response = await api.delete(f"{SESSIONS}/{their_sid}", headers=bearer(mine["access_token"]))
        unknown = await api.delete(f"{SESSIONS}/{uuid4()}", headers=bearer(mine["access_token"]))

        body = assert_problem(response, 404, "not_found")
        unknown_body = assert_problem(unknown, 404, "not_found")
        assert body["detail"] == unknown_body["detail"]
        assert (await me(api, theirs)).status_code == 200

    async def test_already_revoked_session_is_not_found(
        self, api: httpx.AsyncClient, sign_in: SignIn
    ) -> None:
        _, (old, current) = await sign_in(sessions=2)
        path = f"{SESSIONS}/{session_id_of(old['access_token'])}"
        await api.delete(path, headers=bearer(current["access_token"]))

        assert_problem(
            await api.delete(path, headers=bearer(current["access_token"])), 404, "not_found"
        )

    async def test_malformed_id(self, api: httpx.AsyncClient, sign_in: SignIn) -> None:
        _, (pair,) = await sign_in()

        response = await api.delete(f"{SESSIONS}/not-a-uuid", headers=bearer(pair["access_token"]))

        assert_problem(response, 422, "validation_error")


class TestLogout:
    async def test_logout_ends_this_session_only(
        self, api: httpx.AsyncClient, sign_in: SignIn, db: Sessions
    ) -> None:
        _, (pair, other) = await sign_in(sessions=2)

        response = await api.post(LOGOUT, headers=bearer(pair["access_token"]))

        assert response.status_code == 204
        assert response.content == b""
        rejected(await me(api, pair))
        rejected(await api.post(LOGOUT, headers=bearer(pair["access_token"])))
        rejected(await refresh(api, pair))
        assert (await me(api, other)).status_code == 200
        sid = sid_of(pair)
        assert (await stored_session(db, sid)).revoke_reason == "logout"
        assert len(await audit_events(db, "auth.logout", about=sid)) == 1

    async def test_logout_needs_a_token(self, api: httpx.AsyncClient) -> None:
        assert_problem(await api.post(LOGOUT), 401, "not_authenticated")

    async def test_logout_all_ends_every_session_of_the_caller(
        self, api: httpx.AsyncClient, make_user: UserFactory, login: Login, db: Sessions
    ) -> None:
        user = await make_user()
        bystander = await make_user()
        pairs = [await login(user.email) for _ in range(3)]
        theirs = await login(bystander.email)

        response = await api.post(LOGOUT_ALL, headers=bearer(pairs[0]["access_token"]))

        assert response.status_code == 204
        for pair in pairs:
            rejected(await me(api, pair))
            rejected(await refresh(api, pair))
        assert (await me(api, theirs)).status_code == 200
        (event,) = await audit_events(db, "auth.logout_all", about=user.id)
        assert event.data["sessions_revoked"] == 3


class TestUserChanges:
    """Changes made through the users routes end the user's sessions (domain events)."""

    async def admin_token(self, make_user: UserFactory, login: Login) -> str:
        admin = await make_user(roles=["admin"])
        token: str = (await login(admin.email))["access_token"]
        return token

    async def test_role_change_by_an_admin_ends_the_users_sessions(
        self, api: httpx.AsyncClient, make_user: UserFactory, login: Login
    ) -> None:
        admin_token = await self.admin_token(make_user, login)
        user = await make_user()
        pairs = [await login(user.email) for _ in range(2)]

        response = await api.patch(
            f"{USERS}/{user.id}", json={"roles": ["editor"]}, headers=bearer(admin_token)
        )

        assert response.status_code == 200, response.text
        for pair in pairs:
            rejected(await me(api, pair))
            rejected(await refresh(api, pair))
        fresh = await login(user.email)
        claims = json.loads(base64.urlsafe_b64decode(fresh["access_token"].split(".")[1] + "=="))
        assert claims["roles"] == ["editor"]
        assert (await api.get(ME, headers=bearer(admin_token))).status_code == 200

    async def test_unchanged_roles_keep_the_sessions(
        self, api: httpx.AsyncClient, sign_in: SignIn, make_user: UserFactory, login: Login
    ) -> None:
        admin_token = await self.admin_token(make_user, login)
        user, (pair,) = await sign_in(roles=["editor"])

        await api.patch(
            f"{USERS}/{user.id}", json={"roles": ["editor"]}, headers=bearer(admin_token)
        )

        assert (await me(api, pair)).status_code == 200

    async def test_deactivation_ends_the_users_sessions(
        self,
        api: httpx.AsyncClient,
        sign_in: SignIn,
        make_user: UserFactory,
        login: Login,
        db: Sessions,
    ) -> None:
        admin_token = await self.admin_token(make_user, login)
        user, (pair,) = await sign_in()

        response = await api.patch(
            f"{USERS}/{user.id}", json={"is_active": False}, headers=bearer(admin_token)
        )

        assert response.status_code == 200, response.text
        rejected(await me(api, pair))
        rejected(await refresh(api, pair))
        sid = sid_of(pair)
        assert (await stored_session(db, sid)).revoke_reason == "user_deactivated"
        relogin = await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})
        assert_problem(relogin, 403, "account_inactive")

    async def test_deleting_ones_own_account_ends_its_sessions(
        self, api: httpx.AsyncClient, sign_in: SignIn, store: KeyValueStore
    ) -> None:
        _, (pair, other) = await sign_in(sessions=2)

        response = await api.request(
            "DELETE",
            f"{USERS}/me",
            json={"password": PASSWORD},
            headers=bearer(pair["access_token"]),
        )

        assert response.status_code == 204, response.text
        for tokens in (pair, other):
            rejected(await me(api, tokens))
            rejected(await refresh(api, tokens))
            # Refused by the store, before any database lookup.
            assert await store.get(liveness_key(sid_of(tokens))) == b"0"

    async def test_admin_deleting_a_user_ends_its_sessions(
        self, api: httpx.AsyncClient, sign_in: SignIn, make_user: UserFactory, login: Login
    ) -> None:
        admin_token = await self.admin_token(make_user, login)
        user, (pair,) = await sign_in()

        response = await api.delete(f"{USERS}/{user.id}", headers=bearer(admin_token))

        assert response.status_code == 204, response.text
        rejected(await me(api, pair))


class TestSharedState:
    async def test_logout_on_one_instance_is_refused_by_another_at_once(
        self, app_with: AuthAppVariant, make_user: UserFactory
    ) -> None:
        user = await make_user()
        async with serve(app_with()) as one, serve(app_with()) as two:
            pair = await logged_in(one, user)
            assert (await me(two, pair)).status_code == 200

            logout = await one.post(LOGOUT, headers=bearer(pair["access_token"]))

            assert logout.status_code == 204
            rejected(await me(two, pair))
            rejected(await refresh(two, pair))

    async def test_store_miss_of_a_live_session_asks_the_database(
        self, api: httpx.AsyncClient, sign_in: SignIn, store: KeyValueStore
    ) -> None:
        _, (pair,) = await sign_in()
        key = liveness_key(sid_of(pair))
        assert await store.get(key) == b"1"
        await store.delete(key)

        response = await me(api, pair)

        assert response.status_code == 200, response.text
        assert await store.get(key) == b"1"

    async def test_store_miss_of_a_revoked_session_asks_the_database(
        self, api: httpx.AsyncClient, sign_in: SignIn, store: KeyValueStore, db: Sessions
    ) -> None:
        # A revocation whose store write was lost (say Redis restarted empty): the
        # database still has the last word.
        _, (pair,) = await sign_in()
        sid = sid_of(pair)
        await set_session(db, sid, revoked_at=utc_now(), revoke_reason="logout")
        assert (await me(api, pair)).status_code == 200
        await store.delete(liveness_key(sid))

        rejected(await me(api, pair))

        assert await store.get(liveness_key(sid)) == b"0"

    async def test_store_miss_of_an_expired_session_asks_the_database(
        self, api: httpx.AsyncClient, sign_in: SignIn, store: KeyValueStore, db: Sessions
    ) -> None:
        _, (pair,) = await sign_in()
        sid = sid_of(pair)
        await set_session(db, sid, idle_expires_at=utc_now() - timedelta(seconds=1))
        await store.delete(liveness_key(sid))

        rejected(await me(api, pair))

    async def test_revocation_during_a_database_lookup_is_not_overwritten(
        self,
        make_auth_app: AuthAppFactory,
        app_settings: Settings,
        auth_settings: AuthSettings,
        make_user: UserFactory,
        store: KeyValueStore,
    ) -> None:
        # Replica A misses the store and reads the session as live; before A writes
        # "live" back, replica B revokes it. A's late write must not bring it back.
        paused = PausingStore(store)
        user = await make_user()
        async with serve(make_auth_app(app_settings, auth_settings, store=paused)) as client:
            victim = await logged_in(client, user)
            owner = await logged_in(client, user)
            sid = sid_of(victim)
            await store.delete(liveness_key(sid))
            paused.hold(liveness_key(sid))

            in_flight = asyncio.create_task(client.get(ME, headers=bearer(victim["access_token"])))
            async with asyncio.timeout(10):
                await paused.held.wait()
            revoked = await client.delete(
                f"{SESSIONS}/{sid}", headers=bearer(owner["access_token"])
            )
            paused.release()
            async with asyncio.timeout(10):
                await in_flight

            assert revoked.status_code == 204, revoked.text
            rejected(await me(client, victim))


class PausingStore:
    """The test's store, except that writing "live" for one key waits for ``release``."""

    def __init__(self, inner: KeyValueStore) -> None:
        self.inner = inner
        self.key: str | None = None
        self.held = asyncio.Event()
        self._released = asyncio.Event()

    def hold(self, key: str) -> None:
        self.key = key

    def release(self) -> None:
        self._released.set()

    async def _maybe_wait(self, key: str, value: bytes) -> None:
        if key == self.key and value == b"1":
            self.key = None
            self.held.set()
            await self._released.wait()

    def __getattr__(self, name: str) -> Any:
        # Whatever the store interface gains later passes straight through.
        return getattr(self.inner, name)

    async def get(self, key: str) -> bytes | None:
        return await self.inner.get(key)

    async def get_many(self, *keys: str) -> list[bytes | None]:
        return await self.inner.get_many(*keys)

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await self._maybe_wait(key, value)
        await self.inner.set(key, value, ttl=ttl)

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float | None = None) -> bool:
        await self._maybe_wait(key, value)
        return await self.inner.set_if_absent(key, value, ttl=ttl)

    async def delete(self, *keys: str) -> int:
        return await self.inner.delete(*keys)

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        return await self.inner.incr(key, amount, ttl=ttl)

    async def ttl(self, key: str) -> float | None:
        return await self.inner.ttl(key)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        return None  # the test's store fixture closes the real one


class TestLastUsed:
    @pytest.fixture
    def hourly(self, app_with: AuthAppVariant) -> FastAPI:
        """An app that writes down a session's last use at most once an hour."""
        return app_with(session_touch_interval_seconds=3600)

    async def test_written_at_most_once_per_interval(
        self, hourly: FastAPI, make_user: UserFactory, db: Sessions
    ) -> None:
        user = await make_user()
        async with serve(hourly) as client:
            pair = await logged_in(client, user)
            sid = sid_of(pair)
            await set_session(db, sid, last_used_at=LONG_AGO)

            assert (await me(client, pair)).status_code == 200
            touched = (await stored_session(db, sid)).last_used_at
            await set_session(db, sid, last_used_at=LONG_AGO)
            for _ in range(10):
                response = await me(client, pair)
                assert response.status_code == 200

        assert touched > LONG_AGO
        assert (await stored_session(db, sid)).last_used_at == LONG_AGO

    async def test_each_session_is_touched_on_its_own(
        self, hourly: FastAPI, make_user: UserFactory, db: Sessions
    ) -> None:
        user = await make_user()
        async with serve(hourly) as client:
            pairs = [await logged_in(client, user) for _ in range(2)]
            for pair in pairs:
                await set_session(db, sid_of(pair), last_used_at=LONG_AGO)
                await me(client, pair)

        for pair in pairs:
            assert (await stored_session(db, sid_of(pair))).last_used_at > (LONG_AGO)
