import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from aixiate_audit.models import AuditEvent
from aixiate_core import testing
from aixiate_core.db import create_sessionmaker
from aixiate_core.testing import serve
from aixiate_core.testing.mail import Mailbox, link_token
from aixiate_users.events import UserDeactivated, UserDeleted, UserRolesChanged
from aixiate_users.models import User
from aixiate_users.passwords import Passwords
from aixiate_users.repository import UserRepository
from aixiate_users.testing import (
    PASSWORD,
    USER_FIELDS,
    UserFactory,
    audit_events,
    create_user,
)
from fastapi import FastAPI
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

type Login = Callable[[User], dict[str, str]]

USERS = "/api/v1/users"
CONFIRM = "/api/v1/auth/confirm-email"
NOBODY = str(uuid4())

ADMIN_ROUTES = [
    ("GET", "/"),
    ("GET", ""),
    ("POST", "/"),
    ("GET", f"/{NOBODY}"),
    ("PATCH", f"/{NOBODY}"),
    ("DELETE", f"/{NOBODY}"),
]
SELF_ROUTES = [("GET", "/me"), ("PATCH", "/me"), ("POST", "/me/email"), ("DELETE", "/me")]


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Core's problem checks, and the path the problem is about."""
    body = testing.assert_problem(response, status, code)
    assert body["instance"] == response.request.url.path
    return body


def error_locs(body: dict[str, Any]) -> set[tuple[Any, ...]]:
    return {tuple(err["loc"]) for err in body["errors"]}


#: ``member(**columns)``: where the tests get their signed-in users.
type Members = Callable[..., Awaitable[tuple[User, dict[str, str]]]]


@pytest.fixture
def member(account: UserFactory, login: Login) -> Members:
    """``await member(**columns)``: a user whose password is ``PASSWORD``, and bearer
    headers of theirs (carrying the roles they have now)."""

    async def make(**columns: Any) -> tuple[User, dict[str, str]]:
        user = await account(**columns)
        return user, login(user)

    return make


@pytest.fixture
async def admin(session: AsyncSession) -> User:
    return await create_user(session, roles=["admin"])


@pytest.fixture
def as_admin(admin: User, login: Login) -> dict[str, str]:
    """Bearer headers of ``admin``."""
    return login(admin)


async def change_email(
    client: httpx.AsyncClient, headers: dict[str, str], new_email: str, password: str = PASSWORD
) -> httpx.Response:
    """Asks for the account's address to become ``new_email``."""
    return await client.post(
        f"{USERS}/me/email", json={"new_email": new_email, "password": password}, headers=headers
    )


def assert_refusal(
    event: AuditEvent, response: httpx.Response, user_id: UUID | None, reason: str
) -> None:
    """A failure event of ``response``'s request, about ``user_id``, saying why."""
    assert event.request_id == response.headers["x-request-id"]
    assert (event.success, event.reason) == (False, reason)
    assert event.actor_id == user_id
    assert event.target_id == (str(user_id) if user_id else None)
    assert event.target_type == ("user" if user_id else None)


async def delete_me(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any] | None
) -> httpx.Response:
    return await client.request("DELETE", f"{USERS}/me", json=body, headers=headers)


class TestAuthentication:
    @pytest.mark.parametrize(("method", "path"), SELF_ROUTES + ADMIN_ROUTES)
    async def test_no_token_is_401(self, client: httpx.AsyncClient, method: str, path: str) -> None:
        response = await client.request(method, USERS + path, json={})

        assert_problem(response, 401, "not_authenticated")
        assert response.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize(("method", "path"), SELF_ROUTES + ADMIN_ROUTES)
    async def test_unknown_token_is_401(
        self, client: httpx.AsyncClient, method: str, path: str
    ) -> None:
        response = await client.request(
            method, USERS + path, json={}, headers={"Authorization": "Bearer forged"}
        )

        assert_problem(response, 401, "invalid_token")
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    @pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
    async def test_non_admin_is_403_before_anything_else(
        self, client: httpx.AsyncClient, member: Members, method: str, path: str
    ) -> None:
        _, headers = await member(roles=["support", "admin:read"])

        response = await client.request(method, USERS + path, json={}, headers=headers)

        assert_problem(response, 403, "forbidden")

    async def test_token_of_a_deactivated_user_is_401(
        self, client: httpx.AsyncClient, member: Members
    ) -> None:
        _, headers = await member(is_active=False)

        response = await client.get(f"{USERS}/me", headers=headers)

        assert_problem(response, 401, "invalid_token")

    async def test_token_in_the_query_string_is_ignored(
        self, client: httpx.AsyncClient, member: Members
    ) -> None:
        _, headers = await member()
        token = headers["Authorization"].removeprefix("Bearer ")

        response = await client.get(f"{USERS}/me", params={"access_token": token})

        assert_problem(response, 401, "not_authenticated")


class TestReadMe:
    async def test_returns_exactly_the_public_fields(
        self, client: httpx.AsyncClient, session: AsyncSession, login: Login
    ) -> None:
        user = await create_user(
            session, email="me@example.com", password_hash="scrypt$salt$hash", roles=["support"]
        )

        response = await client.get(f"{USERS}/me", headers=login(user))

        assert response.status_code == 200
        body = response.json()
        assert set(body) == USER_FIELDS
        assert body["id"] == str(user.id)
        assert body["email"] == "me@example.com"
        assert body["roles"] == ["support"]
        assert "scrypt$salt$hash" not in response.text
        assert response.headers["x-request-id"]


class TestUpdateMe:
    async def test_changes_the_name(
        self, client: httpx.AsyncClient, member: Members, session: AsyncSession
    ) -> None:
        user, headers = await member(full_name="Before")
        before = user.updated_at

        response = await client.patch(
            f"{USERS}/me", json={"full_name": "  After  "}, headers=headers
        )

        assert response.status_code == 200, response.text
        assert response.json()["full_name"] == "After"
        assert set(response.json()) == USER_FIELDS
        await session.refresh(user)
        assert user.full_name == "After"
        assert user.updated_at >= before

    async def test_null_clears_the_name_and_empty_body_changes_nothing(
        self, client: httpx.AsyncClient, member: Members
    ) -> None:
        _, headers = await member(full_name="Someone")

        unchanged = await client.patch(f"{USERS}/me", json={}, headers=headers)
        cleared = await client.patch(f"{USERS}/me", json={"full_name": None}, headers=headers)

        assert unchanged.json()["full_name"] == "Someone"
        assert cleared.json()["full_name"] is None

    @pytest.mark.parametrize(
        "name",
        [
            "Robert'); DROP TABLE user_account;--",
            "<script>alert('x')</script> & \"friends\"",
            "Zoë Ångström 山田太郎 👩\u200d💻",
            "x" * 200,
        ],
        ids=["sql", "html", "unicode", "longest"],
    )
    async def test_names_are_stored_as_given(
        self, client: httpx.AsyncClient, member: Members, session: AsyncSession, name: str
    ) -> None:
        user, headers = await member()

        response = await client.patch(f"{USERS}/me", json={"full_name": name}, headers=headers)

        assert response.status_code == 200, response.text
        assert response.json()["full_name"] == name
        await session.refresh(user)
        assert user.full_name == name

    @pytest.mark.parametrize(
        "body",
        [
            {"full_name": "x" * 201},
            {"full_name": "line\nbreak"},
            {"full_name": "nul\x00byte"},
            {"full_name": "escape\x1b[31m"},
            {"full_name": "evil\u202egnp.exe"},
            {"full_name": 42},
            {"full_name": ["a"]},
            {"email": "new@example.com"},
            {"roles": ["admin"]},
        ],
        ids=[
            "too-long",
            "newline",
            "nul",
            "ansi",
            "bidi-override",
            "number",
            "list",
            "email-is-not-patchable",
            "roles-are-not-patchable",
        ],
    )
    async def test_bad_input_is_422(
        self,
        client: httpx.AsyncClient,
        member: Members,
        session: AsyncSession,
        body: dict[str, Any],
    ) -> None:
        user, headers = await member(full_name="Kept", roles=[])

        response = await client.patch(f"{USERS}/me", json=body, headers=headers)

        problem = assert_problem(response, 422, "validation_error")
        assert error_locs(problem) == {("body", next(iter(body)))}
        await session.refresh(user)
        assert (user.full_name, user.roles) == ("Kept", [])

    async def test_ten_megabyte_name_is_413(
        self, client: httpx.AsyncClient, member: Members
    ) -> None:
        _, headers = await member()
        body = json.dumps({"full_name": "x" * 10_000_000})

        response = await client.patch(
            f"{USERS}/me",
            content=body,
            headers={**headers, "content-type": "application/json"},
        )

        assert_problem(response, 413, "payload_too_large")

    @pytest.mark.parametrize(
        ("content", "content_type", "status", "code"),
        [
            (b'{"full_name": ', "application/json", 400, "malformed_json"),
            (b"full_name=x", "text/plain", 415, "unsupported_media_type"),
            (b"[]", "application/json", 422, "validation_error"),
        ],
        ids=["malformed", "not-json", "not-an-object"],
    )
    async def test_unreadable_bodies(
        self,
        client: httpx.AsyncClient,
        member: Members,
        content: bytes,
        content_type: str,
        status: int,
        code: str,
    ) -> None:
        _, headers = await member()

        response = await client.patch(
            f"{USERS}/me", content=content, headers={**headers, "content-type": content_type}
        )

        assert_problem(response, status, code)


class TestEmailChange:
    async def test_full_flow(
        self,
        client: httpx.AsyncClient,
        account: UserFactory,
        login: Login,
        mailbox: Mailbox,
        published: list[object],
    ) -> None:
        headers = login(await account(email="old@example.com"))

        response = await change_email(client, headers, "New@Example.com")

        assert response.status_code == 202, response.text
        assert set(response.json()) == {"detail"}
        messages = {message.to: message for message in await mailbox.messages()}
        assert set(messages) == {"new@example.com", "old@example.com"}
        assert "n***@e***.com" in messages["old@example.com"].html
        assert (await client.get(f"{USERS}/me", headers=headers)).json()["email"] == (
            "old@example.com"
        )

        token = link_token(messages["new@example.com"].text)
        assert f'href="https://app.example.com/confirm-email?token={token}"' in (
            messages["new@example.com"].html
        )
        confirmed = await client.post(CONFIRM, json={"token": token})

        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["email"] == "new@example.com"
        assert confirmed.json()["is_verified"] is True
        assert set(confirmed.json()) == USER_FIELDS
        me = await client.get(f"{USERS}/me", headers=headers)
        assert me.json()["email"] == "new@example.com"
        assert [type(event).__name__ for event in published] == ["UserEmailChanged"]
        again = await client.post(CONFIRM, json={"token": token})
        assert_problem(again, 400, "invalid_or_expired_token")

    async def test_taken_address_answers_the_same_and_warns_its_owner(
        self, client: httpx.AsyncClient, member: Members, session: AsyncSession, mailbox: Mailbox
    ) -> None:
        _, headers = await member(email="asker@example.com")
        _, free_user_headers = await member(email="other@example.com")
        await create_user(session, email="owner@example.com", full_name="<b>Owner</b>")

        taken = await change_email(client, headers, "owner@example.com")
        free = await change_email(client, free_user_headers, "free@example.com")

        assert (taken.status_code, taken.json()) == (free.status_code, free.json())
        messages = await mailbox.messages()
        [notice] = [m for m in messages if m.to == "owner@example.com"]
        assert notice.tags == {"template": "email_change_taken"}
        assert "token=" not in notice.text
        assert "&lt;b&gt;Owner&lt;/b&gt;" in notice.html
        assert "<b>Owner</b>" not in notice.html
        assert "Hello <b>Owner</b>" in notice.text
        [asker_notice] = [m for m in messages if m.to == "asker@example.com"]
        assert asker_notice.tags == {"template": "email_change_notice"}

    async def test_names_are_escaped_in_the_html_email(
        self, client: httpx.AsyncClient, member: Members, mailbox: Mailbox
    ) -> None:
        name = "<img src=x onerror=alert(1)>"
        _, headers = await member(full_name=name)

        response = await change_email(client, headers, "escaped@example.com")

        assert response.status_code == 202
        for message in await mailbox.messages():
            assert name not in message.html
            assert "&lt;img src=x onerror=alert(1)&gt;" in message.html
            assert name in message.text

    async def test_wrong_password_is_403_and_sends_nothing(
        self, client: httpx.AsyncClient, member: Members, session: AsyncSession, mailbox: Mailbox
    ) -> None:
        user, headers = await member()
        user_id = user.id

        response = await change_email(client, headers, "new@example.com", "wrong password!")

        assert_problem(response, 403, "invalid_password")
        assert await mailbox.messages() == []
        # Committed on its own: it outlives the request's rollback.
        [event] = await audit_events(session, "user.email.change_request.failed")
        assert_refusal(event, response, user_id, "bad_password")
        assert "wrong password!" not in json.dumps(event.data)

    async def test_current_address_is_400(self, client: httpx.AsyncClient, member: Members) -> None:
        _, headers = await member(email="same@example.com")

        response = await change_email(client, headers, "SAME@example.com")

        assert_problem(response, 400, "email_unchanged")

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({"password": PASSWORD}, ("body", "new_email")),
            ({"new_email": "new@example.com"}, ("body", "password")),
            ({"new_email": "not-an-email", "password": PASSWORD}, ("body", "new_email")),
            ({"new_email": "Eve <eve@example.com>", "password": PASSWORD}, ("body", "new_email")),
            (
                {"new_email": "a" * 320 + "@example.com", "password": PASSWORD},
                ("body", "new_email"),
            ),
            ({"new_email": 7, "password": PASSWORD}, ("body", "new_email")),
            ({"new_email": "new@example.com", "password": ""}, ("body", "password")),
            ({"new_email": "new@example.com", "password": None}, ("body", "password")),
        ],
        ids=[
            "no-email",
            "no-password",
            "invalid-email",
            "display-name",
            "too-long",
            "number",
            "empty-password",
            "null-password",
        ],
    )
    async def test_bad_input_is_422(
        self, client: httpx.AsyncClient, member: Members, body: dict[str, Any], loc: tuple[str, ...]
    ) -> None:
        _, headers = await member()

        response = await client.post(f"{USERS}/me/email", json=body, headers=headers)

        assert loc in error_locs(assert_problem(response, 422, "validation_error"))

    async def test_overlong_password_is_not_echoed(
        self, client: httpx.AsyncClient, member: Members
    ) -> None:
        _, headers = await member()
        secret = "s3cret-" * 150  # over the 1024-character input cap

        response = await change_email(client, headers, "new@example.com", secret)

        assert_problem(response, 422, "validation_error")
        assert secret not in response.text

    async def test_unknown_token_is_400(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        response = await client.post(CONFIRM, json={"token": "nope"})

        assert_problem(response, 400, "invalid_or_expired_token")
        [event] = await audit_events(session, "user.email.change.failed")
        assert_refusal(event, response, None, "unknown_token")

    async def test_used_token_is_400_and_audited_against_its_owner(
        self, client: httpx.AsyncClient, member: Members, session: AsyncSession, mailbox: Mailbox
    ) -> None:
        user, headers = await member()
        user_id = user.id
        await change_email(client, headers, "twice@example.com")
        (confirm,) = await mailbox.to("twice@example.com")
        token = confirm.token
        assert (await client.post(CONFIRM, json={"token": token})).is_success
        unknown = await client.post(CONFIRM, json={"token": "nope"})

        again = await client.post(CONFIRM, json={"token": token})

        # The same answer as for a token that never existed.
        assert_problem(again, 400, "invalid_or_expired_token")
        assert again.json() | {"request_id": "", "instance": ""} == unknown.json() | {
            "request_id": "",
            "instance": "",
        }
        events = await audit_events(session, "user.email.change.failed")
        [event] = [e for e in events if e.request_id == again.headers["x-request-id"]]
        assert_refusal(event, again, user_id, "used")
        assert token not in json.dumps(event.model_dump(mode="json"))

    async def test_address_taken_before_the_click_is_409(
        self, client: httpx.AsyncClient, member: Members, session: AsyncSession, mailbox: Mailbox
    ) -> None:
        user, headers = await member(email="slow@example.com")
        await change_email(client, headers, "contested@example.com")
        (confirm,) = await mailbox.to("contested@example.com")
        token = confirm.token
        await create_user(session, email="contested@example.com")

        response = await client.post(CONFIRM, json={"token": token})

        assert_problem(response, 409, "email_taken")
        await session.refresh(user)
        assert user.email == "slow@example.com"


class TestDeleteMe:
    async def test_deletes_the_account_and_keeps_its_audit_trail(
        self,
        client: httpx.AsyncClient,
        member: Members,
        session: AsyncSession,
        account: UserFactory,
        published: list[object],
    ) -> None:
        user, headers = await member()
        user_id = user.id

        response = await delete_me(client, headers, {"password": PASSWORD})

        assert response.status_code == 204, response.text
        assert response.content == b""
        assert published == [UserDeleted(user_id=user_id)]
        session.expunge_all()
        assert await session.get(User, user_id) is None
        [event] = await audit_events(session, "user.deleted")
        assert (event.actor_id, event.target_id) == (user_id, str(user_id))
        assert event.request_id == response.headers["x-request-id"]
        # The token outlived the account for a moment: it no longer gets in.
        assert_problem(await client.get(f"{USERS}/me", headers=headers), 401, "invalid_token")

    async def test_wrong_password_is_403_and_keeps_the_account(
        self,
        client: httpx.AsyncClient,
        member: Members,
        session: AsyncSession,
        published: list[object],
    ) -> None:
        user, headers = await member()
        user_id = user.id

        response = await delete_me(client, headers, {"password": "guess guess guess"})

        assert_problem(response, 403, "invalid_password")
        assert published == []
        assert await session.get(User, user_id) is not None
        assert await audit_events(session, "user.deleted") == []
        [event] = await audit_events(session, "user.delete.failed")
        assert_refusal(event, response, user_id, "bad_password")

    @pytest.mark.parametrize(
        "body", [None, {}, {"password": 123}, {"password": PASSWORD, "force": True}]
    )
    async def test_bad_input_is_422(
        self,
        client: httpx.AsyncClient,
        member: Members,
        session: AsyncSession,
        body: dict[str, Any] | None,
    ) -> None:
        user, headers = await member()

        response = await delete_me(client, headers, body)

        # No body (and so no content type) is a missing body, not a wrong media type.
        assert_problem(response, 422, "validation_error")
        assert await session.get(User, user.id) is not None


class TestAdminList:
    async def test_pages_through_every_matching_user_once(
        self, client: httpx.AsyncClient, as_admin: dict[str, str], session: AsyncSession
    ) -> None:
        tag = uuid4().hex[:8]
        created = {
            str((await create_user(session, email=f"{tag}-{i}@example.com", roles=["ops"])).id)
            for i in range(5)
        }
        await create_user(session, email=f"{tag}-x@example.com", roles=["ops"], is_active=False)

        seen: list[str] = []
        params: dict[str, str | int] = {"q": tag, "role": "ops", "is_active": "true", "limit": 2}
        for _ in range(10):
            response = await client.get(f"{USERS}/", params=params, headers=as_admin)
            assert response.status_code == 200, response.text
            body = response.json()
            assert set(body) == {"items", "next_cursor"}
            assert all(set(item) == USER_FIELDS for item in body["items"])
            seen += [item["id"] for item in body["items"]]
            if body["next_cursor"] is None:
                break
            params["cursor"] = body["next_cursor"]

        assert len(seen) == len(set(seen)) == 5
        assert set(seen) == created

    async def test_default_limit_and_no_trailing_slash(
        self, client: httpx.AsyncClient, as_admin: dict[str, str], admin: User
    ) -> None:
        response = await client.get(USERS, headers=as_admin)

        assert response.status_code == 200, response.text
        assert str(admin.id) in [item["id"] for item in response.json()["items"]]

    @pytest.mark.parametrize("q", ["%", "_", "%%", "\\"])
    async def test_wildcards_match_only_themselves(
        self, client: httpx.AsyncClient, session: AsyncSession, login: Login, q: str
    ) -> None:
        # Other suites of the run share the database: search under a marker of our own.
        marker = uuid.uuid4().hex
        admin = await create_user(session, roles=["admin"], full_name="Admin")
        # Would match "<marker><q>" if q were a LIKE wildcard rather than a literal.
        await create_user(session, full_name=f"{marker}X")
        literal = await create_user(session, full_name=f"{marker}{q} literally")

        response = await client.get(f"{USERS}/", params={"q": f"{marker}{q}"}, headers=login(admin))

        assert response.status_code == 200
        assert [item["id"] for item in response.json()["items"]] == [str(literal.id)]

    async def test_role_filter(
        self, client: httpx.AsyncClient, as_admin: dict[str, str], session: AsyncSession
    ) -> None:
        auditor = await create_user(session, roles=["auditor", "ops"])
        await create_user(session, roles=["auditor:read"])

        response = await client.get(f"{USERS}/", params={"role": "auditor"}, headers=as_admin)

        assert [item["id"] for item in response.json()["items"]] == [str(auditor.id)]

    @pytest.mark.parametrize(
        ("params", "loc"),
        [
            ({"limit": 0}, "limit"),
            ({"limit": 201}, "limit"),
            ({"limit": "ten"}, "limit"),
            ({"is_active": "maybe"}, "is_active"),
            ({"role": "Admin"}, "role"),
            ({"q": ""}, "q"),
            ({"q": "a\x00b"}, "q"),
            ({"cursor": "x" * 513}, "cursor"),
        ],
    )
    async def test_bad_query_is_422(
        self, client: httpx.AsyncClient, as_admin: dict[str, str], params: dict[str, Any], loc: str
    ) -> None:
        response = await client.get(f"{USERS}/", params=params, headers=as_admin)

        assert error_locs(assert_problem(response, 422, "validation_error")) == {("query", loc)}

    @pytest.mark.parametrize("cursor", ["garbage", "e30", "eyJjIjogMX0", "W10"])
    async def test_malformed_cursor_is_400(
        self, client: httpx.AsyncClient, as_admin: dict[str, str], cursor: str
    ) -> None:
        response = await client.get(f"{USERS}/", params={"cursor": cursor}, headers=as_admin)

        assert_problem(response, 400, "invalid_cursor")

    async def test_limit_200_is_allowed(
        self, client: httpx.AsyncClient, as_admin: dict[str, str]
    ) -> None:
        response = await client.get(f"{USERS}/", params={"limit": 200}, headers=as_admin)

        assert response.status_code == 200


class TestAdminCreate:
    async def test_creates_a_user(
        self,
        client: httpx.AsyncClient,
        as_admin: dict[str, str],
        admin: User,
        session: AsyncSession,
        passwords: Passwords,
    ) -> None:
        response = await client.post(
            f"{USERS}/",
            json={
                "email": "Fresh@Example.com",
                "password": PASSWORD,
                "full_name": "Fresh",
                "roles": ["ops", "ops"],
                "is_verified": True,
            },
            headers=as_admin,
        )

        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == USER_FIELDS
        assert (body["email"], body["roles"], body["is_verified"], body["is_active"]) == (
            "fresh@example.com",
            ["ops"],
            True,
            True,
        )
        assert PASSWORD not in response.text
        created = await session.get(User, UUID(body["id"]))
        assert created is not None
        assert (await passwords.verify(PASSWORD, created.password_hash)).valid
        [event] = await audit_events(session, "admin.user.created")
        assert (event.actor_id, event.target_type, event.target_id) == (
            admin.id,
            "user",
            body["id"],
        )

    async def test_minimal_body_and_no_trailing_slash(
        self, client: httpx.AsyncClient, as_admin: dict[str, str]
    ) -> None:
        response = await client.post(
            USERS, json={"email": "min@example.com", "password": PASSWORD}, headers=as_admin
        )

        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["full_name"], body["roles"], body["is_verified"]) == (None, [], False)

    async def test_existing_address_is_409(
        self, client: httpx.AsyncClient, as_admin: dict[str, str], session: AsyncSession
    ) -> None:
        await create_user(session, email="dupe@example.com")

        response = await client.post(
            f"{USERS}/",
            json={"email": "DUPE@example.com", "password": PASSWORD},
            headers=as_admin,
        )

        assert_problem(response, 409, "email_taken")

    async def test_weak_password_is_422_with_the_reason(
        self, client: httpx.AsyncClient, as_admin: dict[str, str]
    ) -> None:
        response = await client.post(
            f"{USERS}/",
            json={"email": "weak@example.com", "password": "short"},
            headers=as_admin,
        )

        body = assert_problem(response, 422, "weak_password")
        assert "12" in body["detail"]

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({"password": PASSWORD}, ("body", "email")),
            ({"email": "x@example.com"}, ("body", "password")),
            ({"email": "x@example.com", "password": "p" * 1025}, ("body", "password")),
            ({"email": "x@example.com", "password": PASSWORD, "roles": ["Admin"]}, None),
            ({"email": "x@example.com", "password": PASSWORD, "roles": ["r"] * 21}, None),
            ({"email": "x@example.com", "password": PASSWORD, "roles": "admin"}, None),
            ({"email": "x@example.com", "password": PASSWORD, "is_verified": "yes"}, None),
            ({"email": "x@example.com", "password": PASSWORD, "is_active": False}, None),
        ],
        ids=[
            "no-email",
            "no-password",
            "long-password",
            "bad-role",
            "too-many-roles",
            "roles-not-a-list",
            "bool-as-string",
            "unknown-field",
        ],
    )
    async def test_bad_input_is_422(
        self,
        client: httpx.AsyncClient,
        as_admin: dict[str, str],
        body: dict[str, Any],
        loc: tuple[str, ...] | None,
    ) -> None:
        response = await client.post(f"{USERS}/", json=body, headers=as_admin)

        problem = assert_problem(response, 422, "validation_error")
        if loc is not None:
            assert loc in error_locs(problem)


class TestAdminReadUpdateDelete:
    async def test_read(
        self, client: httpx.AsyncClient, as_admin: dict[str, str], session: AsyncSession
    ) -> None:
        user = await create_user(session, password_hash="scrypt$salt$hash")

        response = await client.get(f"{USERS}/{user.id}", headers=as_admin)

        assert response.status_code == 200
        assert set(response.json()) == USER_FIELDS
        assert response.json()["id"] == str(user.id)

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", f"/{NOBODY}"),
            ("PATCH", f"/{NOBODY}"),
            ("DELETE", f"/{NOBODY}"),
        ],
    )
    async def test_unknown_id_is_404(
        self, client: httpx.AsyncClient, as_admin: dict[str, str], method: str, path: str
    ) -> None:
        response = await client.request(method, USERS + path, json={}, headers=as_admin)

        assert_problem(response, 404, "not_found")

    async def test_malformed_id_is_422(
        self, client: httpx.AsyncClient, as_admin: dict[str, str]
    ) -> None:
        response = await client.get(f"{USERS}/not-a-uuid", headers=as_admin)

        body = assert_problem(response, 422, "validation_error")
        assert error_locs(body) == {("path", "user_id")}

    async def test_update(
        self,
        client: httpx.AsyncClient,
        as_admin: dict[str, str],
        admin: User,
        session: AsyncSession,
        published: list[object],
    ) -> None:
        user = await create_user(session, roles=["ops"], is_verified=False)

        response = await client.patch(
            f"{USERS}/{user.id}",
            json={"roles": ["ops", "admin"], "is_active": False, "is_verified": True},
            headers=as_admin,
        )

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["roles"], body["is_active"], body["is_verified"]) == (
            ["ops", "admin"],
            False,
            True,
        )
        assert published == [
            UserRolesChanged(user_id=user.id, roles=frozenset({"ops", "admin"})),
            UserDeactivated(user_id=user.id),
        ]
        [event] = await audit_events(session, "admin.user.updated")
        assert event.actor_id == admin.id
        assert event.data["fields"] == ["roles", "is_active", "is_verified"]

    @pytest.mark.parametrize(
        "body",
        [
            {"roles": None},
            {"is_active": None},
            {"is_active": "false"},
            {"email": "x@example.com"},
            {"password_hash": "x"},
            {"full_name": "a\tb"},
        ],
    )
    async def test_bad_update_is_422(
        self,
        client: httpx.AsyncClient,
        as_admin: dict[str, str],
        session: AsyncSession,
        body: dict[str, Any],
    ) -> None:
        user = await create_user(session)

        response = await client.patch(f"{USERS}/{user.id}", json=body, headers=as_admin)

        assert_problem(response, 422, "validation_error")

    @pytest.mark.parametrize(
        ("method", "body"),
        [
            ("PATCH", {"is_active": False}),
            ("PATCH", {"roles": ["ops"]}),
            ("DELETE", None),
        ],
        ids=["deactivate", "drop-admin", "delete"],
    )
    async def test_admin_cannot_lock_themselves_out(
        self,
        client: httpx.AsyncClient,
        session: AsyncSession,
        login: Login,
        method: str,
        body: dict[str, Any] | None,
    ) -> None:
        admin = await create_user(session, roles=["admin", "ops"])
        headers = login(admin)

        response = await client.request(method, f"{USERS}/{admin.id}", json=body, headers=headers)

        assert_problem(response, 409, "cannot_modify_self")
        me = await client.get(f"{USERS}/me", headers=headers)
        assert me.status_code == 200
        assert (me.json()["is_active"], me.json()["roles"]) == (True, ["admin", "ops"])

    async def test_delete(
        self,
        client: httpx.AsyncClient,
        as_admin: dict[str, str],
        admin: User,
        session: AsyncSession,
        published: list[object],
    ) -> None:
        admin_id = admin.id
        user = await create_user(session)
        user_id = user.id

        response = await client.delete(f"{USERS}/{user_id}", headers=as_admin)

        assert response.status_code == 204
        assert published == [UserDeleted(user_id=user_id)]
        assert_problem(await client.get(f"{USERS}/{user_id}", headers=as_admin), 404, "not_found")
        [event] = await audit_events(session, "admin.user.deleted")
        assert (event.actor_id, event.target_type, event.target_id) == (
            admin_id,
            "user",
            str(user_id),
        )


class TestOpenApi:
    async def test_documents_the_routes_and_their_problems(self, app: FastAPI) -> None:
        spec = app.openapi()
        paths = spec["paths"]

        assert set(paths) >= {
            "/api/v1/users/me",
            "/api/v1/users/me/email",
            "/api/v1/users/",
            "/api/v1/users/{user_id}",
        }
        assert set(paths["/api/v1/users/me"]) == {"get", "patch", "delete"}
        assert "/api/v1/users" not in paths
        create = paths["/api/v1/users/"]["post"]
        assert {"201", "401", "403", "409", "422"} <= set(create["responses"])
        assert "application/problem+json" in create["responses"]["409"]["content"]
        assert "email_taken" in create["responses"]["409"]["description"]
        update = paths["/api/v1/users/{user_id}"]["patch"]
        assert "cannot_modify_self" in update["responses"]["409"]["description"]
        assert "password_hash" not in json.dumps(spec["components"]["schemas"]["UserRead"])
        assert paths["/api/v1/users/me"]["delete"]["requestBody"]["required"] is True


class TestRealUnitOfWork:
    """Through the real session dependency: commits for good, rolls back on errors."""

    async def test_commits_and_turns_an_email_race_into_409(
        self,
        committing_app: FastAPI,
        engine: AsyncEngine,
        login: Login,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        sessionmaker = create_sessionmaker(engine)
        tag = uuid4().hex[:12]
        async with sessionmaker() as setup, setup.begin():
            admin = await create_user(setup, email=f"uow-{tag}@example.com", roles=["admin"])
        headers = login(admin)
        new_email = f"uow-{tag}-new@example.com"
        try:
            async with serve(committing_app) as client:
                created = await client.post(
                    USERS, json={"email": new_email, "password": PASSWORD}, headers=headers
                )
                assert created.status_code == 201, created.text
                # A concurrent request inserted the address after our check: the unique
                # index decides, and the answer is a conflict, not a 500.
                monkeypatch.setattr(UserRepository, "get_by_email", _never_found)
                raced = await client.post(
                    USERS, json={"email": new_email, "password": PASSWORD}, headers=headers
                )
                assert_problem(raced, 409, "email_taken")
                monkeypatch.undo()
                # The failed request left nothing half-done; the next one works.
                renamed = await client.patch(
                    f"{USERS}/{created.json()['id']}",
                    json={"full_name": "Committed"},
                    headers=headers,
                )
                assert renamed.status_code == 200, renamed.text

            async with sessionmaker() as check:
                stored = await UserRepository(check).get_by_email(new_email)
                assert stored is not None
                assert stored.full_name == "Committed"
                created_events = await audit_events(check, "admin.user.created")
                assert [e.target_id for e in created_events if e.actor_id == admin.id] == [
                    str(stored.id)
                ]
        finally:
            async with sessionmaker() as cleanup, cleanup.begin():
                users = (
                    await cleanup.exec(select(User).where(col(User.email).startswith(f"uow-{tag}")))
                ).all()
                ids = [user.id for user in users]
                await cleanup.exec(
                    delete(AuditEvent).where(col(AuditEvent.target_id).in_([str(i) for i in ids]))
                )
                await cleanup.exec(delete(User).where(col(User.id).in_(ids)))


async def _never_found(_self: UserRepository, _email: str) -> None:
    return None
