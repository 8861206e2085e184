"""Password recovery (forgot, reset) and change, over HTTP, with links read from the
app's own outbox."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aixiate_audit.models import AuditEvent
from aixiate_auth.testing import EmailFactory, Login, UserFactory
from aixiate_core.crypto import token_digest
from aixiate_core.db import utc_now
from aixiate_core.settings import Settings
from aixiate_core.testing import Sessions, assert_problem, bearer
from aixiate_core.testing.mail import Mailbox, link_token
from aixiate_users.models import ActionToken, User
from aixiate_users.testing import PASSWORD, audit_events
from sqlalchemy import update
from sqlmodel import col, select

NEW_PASSWORD = "quiet-lantern-meadow-77"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
FORGOT = "/api/v1/auth/password/forgot"
RESET = "/api/v1/auth/password/reset"
CHANGE = "/api/v1/auth/password/change"
ME = "/api/v1/users/me"


async def login_status(api: httpx.AsyncClient, email: str, password: str) -> int:
    response = await api.post(LOGIN, json={"email": email, "password": password})
    return response.status_code


async def me(api: httpx.AsyncClient, pair: dict[str, Any]) -> httpx.Response:
    return await api.get(ME, headers=bearer(pair["access_token"]))


async def reset(
    api: httpx.AsyncClient, token: str, new_password: str = NEW_PASSWORD
) -> httpx.Response:
    return await api.post(RESET, json={"token": token, "new_password": new_password})


async def change(
    api: httpx.AsyncClient, pair: dict[str, Any], current: str, new: str = NEW_PASSWORD
) -> httpx.Response:
    """Changes the password of ``pair``'s user, from ``current`` to ``new``."""
    return await api.post(
        CHANGE,
        json={"current_password": current, "new_password": new},
        headers=bearer(pair["access_token"]),
    )


async def reset_link_token(mailbox: Mailbox, address: str) -> str:
    """The token of the newest reset link sent to ``address``."""
    return link_token((await mailbox.last(address, "password_reset")).text, "reset-password")


@pytest.fixture
def forgot(api: httpx.AsyncClient, mailbox: Mailbox) -> Callable[[str], Awaitable[str]]:
    """``await forgot(email)``: asks for a reset link, and gives its token."""

    async def ask(email: str) -> str:
        response = await api.post(FORGOT, json={"email": email})
        assert response.status_code == 202
        return await reset_link_token(mailbox, email)

    return ask


async def reset_refusals(db: Sessions, *responses: httpx.Response) -> list[AuditEvent]:
    """The ``auth.password.reset.failed`` events of these requests, one each, all failures
    committed despite the request's rollback and holding neither token nor password."""
    ids = [response.headers["x-request-id"] for response in responses]
    async with db() as session:
        statement = (
            select(AuditEvent)
            .where(AuditEvent.event_type == "auth.password.reset.failed")
            .where(col(AuditEvent.request_id).in_(ids))
        )
        found = {event.request_id: event for event in (await session.exec(statement)).all()}
    assert set(found) == set(ids)
    for response in responses:
        assert_problem(response, 400, "invalid_or_expired_token")
        event = found[response.headers["x-request-id"]]
        assert event.success is False
        assert event.target_id == (str(event.actor_id) if event.actor_id else None)
        stored = json.dumps(event.model_dump(mode="json"))
        for secret in json.loads(response.request.content).values():
            assert secret not in stored
    return [found[request_id] for request_id in ids]


async def expire_token(db: Sessions, token: str) -> None:
    async with db() as session, session.begin():
        await session.exec(
            update(ActionToken)
            .where(col(ActionToken.token_hash) == token_digest(token))
            .values(expires_at=utc_now() - timedelta(seconds=1))
        )


type Forgot = Callable[[str], Awaitable[str]]


class TestForgot:
    async def test_sends_a_reset_link(
        self,
        api: httpx.AsyncClient,
        make_user: UserFactory,
        mailbox: Mailbox,
        db: Sessions,
        app_settings: Settings,
    ) -> None:
        user = await make_user(full_name="Ada Lovelace")

        response = await api.post(FORGOT, json={"email": user.email})

        assert response.status_code == 202, response.text
        (message,) = await mailbox.to(user.email, "password_reset")
        token = await reset_link_token(mailbox, user.email)
        assert f"{app_settings.public_url}/reset-password?token={token}" in message.text
        assert token in message.html
        assert "Ada Lovelace" in message.text
        assert token not in response.text
        assert len(await audit_events(db, "auth.password.forgot", about=user.id)) == 1

    async def test_same_answer_for_unknown_inactive_and_known_addresses(
        self,
        api: httpx.AsyncClient,
        make_user: UserFactory,
        new_email: EmailFactory,
        mailbox: Mailbox,
    ) -> None:
        known = await make_user()
        inactive = await make_user(is_active=False)
        unknown = new_email("nobody")

        answers = [
            await api.post(FORGOT, json={"email": address})
            for address in (known.email, unknown, inactive.email)
        ]

        assert {response.status_code for response in answers} == {202}
        assert len({response.text for response in answers}) == 1
        assert len({response.headers["content-type"] for response in answers}) == 1
        assert await mailbox.to(unknown, "password_reset") == []
        assert await mailbox.to(inactive.email, "password_reset") == []

    async def test_a_new_link_retires_the_previous_one(
        self, api: httpx.AsyncClient, make_user: UserFactory, forgot: Forgot
    ) -> None:
        user = await make_user()
        first = await forgot(user.email)
        second = await forgot(user.email)

        stale = await reset(api, first)
        fresh = await reset(api, second)

        assert_problem(stale, 400, "invalid_or_expired_token")
        assert fresh.status_code == 204, fresh.text

    @pytest.mark.parametrize("body", [{}, {"email": "not-an-address"}, {"email": 1}])
    async def test_invalid_bodies(self, api: httpx.AsyncClient, body: dict[str, Any]) -> None:
        assert_problem(await api.post(FORGOT, json=body), 422, "validation_error")


class TestReset:
    async def test_sets_the_password_and_ends_every_session(
        self,
        api: httpx.AsyncClient,
        make_user: UserFactory,
        login: Login,
        forgot: Forgot,
        mailbox: Mailbox,
        db: Sessions,
    ) -> None:
        user = await make_user()
        pairs = [await login(user.email) for _ in range(2)]
        token = await forgot(user.email)

        response = await reset(api, token)

        assert response.status_code == 204, response.text
        assert await login_status(api, user.email, PASSWORD) == 401
        assert await login_status(api, user.email, NEW_PASSWORD) == 200
        for pair in pairs:
            assert_problem(await me(api, pair), 401, "invalid_token")
            refreshed = await api.post(REFRESH, json={"refresh_token": pair["refresh_token"]})
            assert_problem(refreshed, 401, "invalid_token")
        assert len(await mailbox.to(user.email, "password_changed")) == 1
        (event,) = await audit_events(db, "auth.password.reset", about=user.id)
        assert event.data["sessions_revoked"] == 2

    async def test_token_works_once(
        self, api: httpx.AsyncClient, make_user: UserFactory, forgot: Forgot, db: Sessions
    ) -> None:
        user = await make_user()
        token = await forgot(user.email)
        first = await reset(api, token)

        second = await reset(api, token, PASSWORD + "-x")

        assert first.status_code == 204
        assert_problem(second, 400, "invalid_or_expired_token")
        assert await login_status(api, user.email, NEW_PASSWORD) == 200
        (event,) = await reset_refusals(db, second)
        assert (event.reason, event.actor_id) == ("used", user.id)

    async def test_concurrent_uses_of_one_token_let_one_through(
        self, api: httpx.AsyncClient, make_user: UserFactory, forgot: Forgot, db: Sessions
    ) -> None:
        user = await make_user()
        token = await forgot(user.email)

        responses = await asyncio.gather(
            *(reset(api, token, f"{NEW_PASSWORD}-{i}") for i in range(5))
        )

        assert sorted(r.status_code for r in responses) == [204, 400, 400, 400, 400]
        refused = await reset_refusals(db, *(r for r in responses if r.status_code == 400))
        assert {(event.reason, event.actor_id) for event in refused} == {("used", user.id)}

    async def test_expired_token(
        self, api: httpx.AsyncClient, make_user: UserFactory, forgot: Forgot, db: Sessions
    ) -> None:
        user = await make_user()
        token = await forgot(user.email)
        await expire_token(db, token)

        response = await reset(api, token)

        assert_problem(response, 400, "invalid_or_expired_token")
        assert await login_status(api, user.email, PASSWORD) == 200
        (event,) = await reset_refusals(db, response)
        assert (event.reason, event.actor_id) == ("expired", user.id)

    async def test_unknown_token(self, api: httpx.AsyncClient, db: Sessions) -> None:
        response = await reset(api, "x" * 43)

        assert_problem(response, 400, "invalid_or_expired_token")
        (event,) = await reset_refusals(db, response)
        assert (event.reason, event.actor_id, event.target_type) == ("unknown_token", None, None)

    async def test_weak_password_keeps_the_token_usable(
        self, api: httpx.AsyncClient, make_user: UserFactory, login: Login, forgot: Forgot
    ) -> None:
        user = await make_user()
        pair = await login(user.email)
        token = await forgot(user.email)

        weak = await reset(api, token, "short")

        body = assert_problem(weak, 422, "weak_password")
        assert body.get("reason") == "too_short"
        assert await login_status(api, user.email, PASSWORD) == 200
        assert (await me(api, pair)).status_code == 200
        retry = await reset(api, token)
        assert retry.status_code == 204, retry.text

    async def test_password_containing_the_email_is_weak(
        self, api: httpx.AsyncClient, make_user: UserFactory, forgot: Forgot
    ) -> None:
        user = await make_user()
        token = await forgot(user.email)

        response = await reset(api, token, f"my {user.email} password")

        assert_problem(response, 422, "weak_password")

    async def test_reset_proves_the_address(
        self, api: httpx.AsyncClient, make_user: UserFactory, forgot: Forgot
    ) -> None:
        user = await make_user(is_verified=False)
        token = await forgot(user.email)

        await reset(api, token)

        assert await login_status(api, user.email, NEW_PASSWORD) == 200

    async def test_deactivated_meanwhile(
        self, api: httpx.AsyncClient, make_user: UserFactory, forgot: Forgot, db: Sessions
    ) -> None:
        user = await make_user()
        token = await forgot(user.email)
        async with db() as session, session.begin():
            await session.exec(update(User).where(col(User.id) == user.id).values(is_active=False))

        response = await reset(api, token)

        assert_problem(response, 400, "invalid_or_expired_token")
        (event,) = await reset_refusals(db, response)
        assert (event.reason, event.actor_id) == ("inactive", user.id)

    async def test_verification_token_is_not_a_reset_token(
        self, api: httpx.AsyncClient, new_email: EmailFactory, mailbox: Mailbox, db: Sessions
    ) -> None:
        email = new_email()
        await api.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
        verification = (await mailbox.last(email, "verify_email")).token

        response = await reset(api, verification)

        assert_problem(response, 400, "invalid_or_expired_token")
        (event,) = await reset_refusals(db, response)
        async with db() as session:
            owner = (await session.exec(select(User).where(col(User.email) == email))).one()
        assert (event.reason, event.actor_id) == ("wrong_purpose", owner.id)


type SignedIn = tuple[User, list[dict[str, Any]]]


class TestChange:
    @pytest.fixture
    async def signed_in(self, make_user: UserFactory, login: Login) -> SignedIn:
        """A user with three sessions: the one that changes the password, and two others."""
        user = await make_user()
        return user, [await login(user.email) for _ in range(3)]

    async def test_changes_the_password_and_ends_the_other_sessions(
        self, api: httpx.AsyncClient, signed_in: SignedIn, mailbox: Mailbox, db: Sessions
    ) -> None:
        user, (current, *others) = signed_in

        response = await change(api, current, PASSWORD)

        assert response.status_code == 204, response.text
        assert (await me(api, current)).status_code == 200
        refreshed = await api.post(REFRESH, json={"refresh_token": current["refresh_token"]})
        assert refreshed.status_code == 200
        for pair in others:
            assert_problem(await me(api, pair), 401, "invalid_token")
        assert await login_status(api, user.email, PASSWORD) == 401
        assert await login_status(api, user.email, NEW_PASSWORD) == 200
        (notice,) = await mailbox.to(user.email, "password_changed")
        assert NEW_PASSWORD not in notice.text
        (event,) = await audit_events(db, "auth.password.changed", about=user.id)
        assert event.data["sessions_revoked"] == 2

    async def test_wrong_current_password(
        self, api: httpx.AsyncClient, signed_in: SignedIn, mailbox: Mailbox, db: Sessions
    ) -> None:
        user, (current, other, _) = signed_in

        response = await change(api, current, "not-my-password")

        assert_problem(response, 403, "invalid_password")
        assert await login_status(api, user.email, PASSWORD) == 200
        assert (await me(api, current)).status_code == 200
        assert (await me(api, other)).status_code == 200
        assert await mailbox.to(user.email, "password_changed") == []
        (event,) = await audit_events(db, "auth.password.change.failed", about=user.id)
        assert event.success is False

    async def test_weak_new_password_changes_nothing(
        self, api: httpx.AsyncClient, signed_in: SignedIn
    ) -> None:
        user, (current, other, _) = signed_in

        response = await change(api, current, PASSWORD, "password1234")

        assert_problem(response, 422, "weak_password")
        assert await login_status(api, user.email, PASSWORD) == 200
        assert (await me(api, other)).status_code == 200

    async def test_needs_a_token(self, api: httpx.AsyncClient) -> None:
        response = await api.post(
            CHANGE, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        )

        assert_problem(response, 401, "not_authenticated")

    async def test_concurrent_changes_from_several_users(
        self, api: httpx.AsyncClient, make_user: UserFactory, login: Login
    ) -> None:
        # Verification is slow; other writes land meanwhile (SQLite allows one writer).
        users = [await make_user() for _ in range(5)]
        pairs = [await login(user.email) for user in users]

        responses = await asyncio.gather(
            *(change(api, pair, PASSWORD) for pair in pairs),
            *(api.post(LOGIN, json={"email": u.email, "password": PASSWORD}) for u in users),
        )

        assert [r.status_code for r in responses[:5]] == [204] * 5, [r.text for r in responses]
        assert all(r.status_code in (200, 401) for r in responses[5:])
