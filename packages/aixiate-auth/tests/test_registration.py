"""Registration and email verification over HTTP, against the app's real outbox."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from aixiate_audit.models import AuditEvent
from aixiate_auth.settings import AuthSettings
from aixiate_auth.testing import EmailFactory
from aixiate_core.crypto import token_digest
from aixiate_core.db import create_sessionmaker, utc_now
from aixiate_core.errors import PROBLEM_CONTENT_TYPE
from aixiate_core.settings import Settings
from aixiate_core.testing import FakeResend, assert_problem, serve
from aixiate_core.testing.mail import Mailbox, link_token
from aixiate_users import action_tokens as tokens
from aixiate_users.models import ActionToken, User
from aixiate_users.passwords import Passwords
from aixiate_users.repository import normalize_email
from aixiate_users.settings import UsersSettings
from aixiate_users.testing import PASSWORD, USER_FIELDS, audit_events, fast_users_settings
from fastapi import FastAPI
from markupsafe import escape
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

REGISTER = "/api/v1/auth/register"
VERIFY = "/api/v1/auth/verify-email"
RESEND = "/api/v1/auth/verify-email/resend"

type AppFactory = Callable[[Settings, AuthSettings, Passwords], FastAPI]


async def user_by_email(engine: AsyncEngine, email: str) -> User | None:
    async with create_sessionmaker(engine)() as session:
        statement = select(User).where(User.email == normalize_email(email))
        return (await session.exec(statement)).first()


async def users_with_email(engine: AsyncEngine, email: str) -> list[User]:
    async with create_sessionmaker(engine)() as session:
        statement = select(User).where(User.email == normalize_email(email))
        return list((await session.exec(statement)).all())


async def refusal(
    engine: AsyncEngine,
    response: httpx.Response,
    event_type: str,
    reason: str,
    user_id: UUID | None,
) -> AuditEvent:
    """The refused request's failure event: committed despite the request's rollback,
    saying why, about the token's owner when the token is ours, and holding no token."""
    async with create_sessionmaker(engine)() as session:
        statement = (
            select(AuditEvent)
            .where(AuditEvent.event_type == event_type)
            .where(AuditEvent.request_id == response.headers["x-request-id"])
        )
        (event,) = (await session.exec(statement)).all()
    assert (event.success, event.reason, event.actor_id) == (False, reason, user_id)
    assert event.target_id == (None if user_id is None else str(user_id))
    token = json.loads(response.request.content)["token"]
    assert token not in json.dumps(event.model_dump(mode="json"))
    return event


async def expire(engine: AsyncEngine, token: str) -> None:
    async with create_sessionmaker(engine)() as session, session.begin():
        await session.exec(
            update(ActionToken)
            .where(col(ActionToken.token_hash) == token_digest(token))
            .values(expires_at=utc_now() - timedelta(seconds=1))
        )


class Recorder:
    """Every response of a test, to check that no secret ever appears in one."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.responses: list[httpx.Response] = []

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        response = await self.client.post(url, **kwargs)
        self.responses.append(response)
        return response

    def assert_never_shown(self, *secrets: str) -> None:
        for response in self.responses:
            for secret in secrets:
                assert secret not in response.text, f"{response.request.url} leaked a secret"


@pytest.fixture
def http(client: httpx.AsyncClient) -> Recorder:
    return Recorder(client)


@dataclass(frozen=True, slots=True)
class SignUp:
    """A registration over HTTP: its answer, the address, the stored user, and the token
    of the verification link it sent."""

    response: httpx.Response
    email: str
    user: User
    token: str


type SignUpFactory = Callable[..., Awaitable[SignUp]]


@pytest.fixture
def sign_up(
    http: Recorder, engine: AsyncEngine, mailbox: Mailbox, new_email: EmailFactory
) -> SignUpFactory:
    """``await sign_up(**fields)``: registers a new address with ``PASSWORD``."""

    async def register(**fields: Any) -> SignUp:
        email = new_email(fields.pop("prefix", "user"))
        response = await http.post(REGISTER, json={"email": email, "password": PASSWORD, **fields})
        user = await user_by_email(engine, email)
        assert user is not None
        return SignUp(response, email, user, (await mailbox.last(email, "verify_email")).token)

    return register


async def set_user(engine: AsyncEngine, user: User, **values: Any) -> None:
    async with create_sessionmaker(engine)() as session, session.begin():
        await session.exec(update(User).where(col(User.id) == user.id).values(**values))


class TestRegister:
    async def test_creates_an_unverified_user_and_sends_a_link(
        self,
        http: Recorder,
        sign_up: SignUpFactory,
        engine: AsyncEngine,
        mailbox: Mailbox,
        app_settings: Settings,
    ) -> None:
        registered = await sign_up(full_name="Ada Lovelace")

        response, email, user = registered.response, registered.email, registered.user
        assert response.status_code == 202
        assert set(response.json()) == {"detail"}
        assert user.email == email
        assert user.full_name == "Ada Lovelace"
        assert user.roles == []
        assert user.is_verified is False
        assert user.is_active is True
        assert user.password_hash is not None
        assert user.password_hash.startswith("$argon2id$")
        mail = await mailbox.last(email, "verify_email")
        assert mail.message.to == email
        assert f"{app_settings.public_url}/verify-email?token={mail.token}" in mail.message.text
        assert "24 hours" in mail.message.text
        assert "Ada Lovelace" in mail.message.text
        assert mail.token in mail.message.html
        (event,) = await audit_events(engine, "user.registered", about=user.id)
        assert event.actor_id == user.id
        assert event.target_type == "user"
        assert event.success is True
        http.assert_never_shown(PASSWORD, user.password_hash, mail.token)

    async def test_email_is_stored_normalized(
        self, http: Recorder, engine: AsyncEngine, new_email: EmailFactory
    ) -> None:
        email = new_email("MixedCase")

        response = await http.post(
            REGISTER, json={"email": f"  {email.upper()} ", "password": PASSWORD}
        )

        assert response.status_code == 202
        user = await user_by_email(engine, email)
        assert user is not None
        assert user.email == email.lower()

    async def test_full_name_is_optional(
        self, http: Recorder, engine: AsyncEngine, new_email: EmailFactory
    ) -> None:
        email = new_email()

        response = await http.post(REGISTER, json={"email": email, "password": PASSWORD})

        assert response.status_code == 202
        user = await user_by_email(engine, email)
        assert user is not None
        assert user.full_name is None

    async def test_taken_email_answers_the_same_and_notifies_the_owner(
        self, http: Recorder, engine: AsyncEngine, mailbox: Mailbox, new_email: EmailFactory
    ) -> None:
        email = new_email()
        first = await http.post(
            REGISTER, json={"email": email, "password": PASSWORD, "full_name": "Owner"}
        )
        original = await user_by_email(engine, email)
        assert original is not None

        second = await http.post(
            REGISTER,
            json={"email": email.upper(), "password": "another-good-passphrase", "full_name": "X"},
        )

        assert second.status_code == first.status_code == 202
        assert second.json() == first.json()
        assert second.headers["content-type"] == first.headers["content-type"]
        users = await users_with_email(engine, email)
        assert [user.id for user in users] == [original.id]
        assert users[0].password_hash == original.password_hash
        assert users[0].full_name == "Owner"
        notices = await mailbox.to(email, "account_exists")
        assert len(notices) == 1
        assert "Owner" in notices[0].message.text
        assert "token=" not in notices[0].message.text
        assert len(await mailbox.to(email, "verify_email")) == 1
        (event,) = await audit_events(engine, "user.register.duplicate", about=original.id)
        assert event.success is False
        assert event.reason == "email_taken"
        assert event.actor_id is None

    @pytest.mark.parametrize(
        ("password", "reason"),
        [
            ("short-pw", "too_short"),
            ("x" * 129, "too_long"),
            ("qwerty123456", "common"),
            ("PassWord123!!", None),
        ],
    )
    async def test_weak_password_says_why_and_creates_nothing(
        self,
        http: Recorder,
        engine: AsyncEngine,
        mailbox: Mailbox,
        new_email: EmailFactory,
        password: str,
        reason: str | None,
    ) -> None:
        email = new_email()

        response = await http.post(REGISTER, json={"email": email, "password": password})

        if reason is None:
            assert response.status_code == 202
            return
        body = assert_problem(response, 422, "weak_password")
        assert body["reason"] == reason
        assert await user_by_email(engine, email) is None
        assert await mailbox.to(email) == []
        http.assert_never_shown(password)

    async def test_password_containing_the_email_is_weak(
        self, http: Recorder, new_email: EmailFactory
    ) -> None:
        email = new_email("grace")

        response = await http.post(
            REGISTER, json={"email": email, "password": f"my-{email.split('@')[0]}-pass"}
        )

        assert assert_problem(response, 422, "weak_password")["reason"] == "contains_email"

    async def test_weak_password_answer_ignores_whether_the_email_exists(
        self, http: Recorder, new_email: EmailFactory
    ) -> None:
        taken = new_email()
        await http.post(REGISTER, json={"email": taken, "password": PASSWORD})

        for_taken = await http.post(REGISTER, json={"email": taken, "password": "qwerty123456"})
        for_new = await http.post(REGISTER, json={"email": new_email(), "password": "qwerty123456"})

        assert_problem(for_taken, 422, "weak_password")
        strip = {"request_id", "instance"}
        assert {k: v for k, v in for_taken.json().items() if k not in strip} == {
            k: v for k, v in for_new.json().items() if k not in strip
        }


class CountingPasswords(Passwords):
    def __init__(self, settings: UsersSettings) -> None:
        super().__init__(settings)
        self.hashed = 0

    async def hash(self, password: str) -> str:
        self.hashed += 1
        return await super().hash(password)


class TestRegisterCost:
    async def test_a_taken_address_costs_a_hash_too(
        self,
        make_app: AppFactory,
        app_settings: Settings,
        auth_settings: AuthSettings,
        new_email: EmailFactory,
    ) -> None:
        passwords = CountingPasswords(fast_users_settings())
        email = new_email()
        try:
            async with serve(make_app(app_settings, auth_settings, passwords)) as client:
                await client.post(REGISTER, json={"email": email, "password": PASSWORD})
                after_new = passwords.hashed
                await client.post(REGISTER, json={"email": email, "password": PASSWORD})
        finally:
            passwords.shutdown()

        assert after_new == 1
        assert passwords.hashed == 2


class TestRegisterInput:
    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"password": PASSWORD},
            {"email": "someone@example.com"},
            {"email": "not-an-email", "password": PASSWORD},
            {"email": "Someone <someone@example.com>", "password": PASSWORD},
            {"email": "a" * 310 + "@example.com", "password": PASSWORD},
            {"email": 42, "password": PASSWORD},
            {"email": ["someone@example.com"], "password": PASSWORD},
            {"email": "someone@example.com", "password": 12345678901234},
            {"email": "someone@example.com", "password": None},
            {"email": "someone@example.com", "password": PASSWORD, "full_name": 7},
            {"email": "someone@example.com", "password": PASSWORD, "full_name": "x" * 201},
            {"email": "someone@example.com", "password": PASSWORD, "roles": ["admin"]},
            {"email": "someone@example.com", "password": PASSWORD, "is_verified": True},
        ],
        ids=lambda body: ",".join(f"{k}={str(v)[:12]}" for k, v in body.items()) or "empty",
    )
    async def test_invalid_bodies(self, http: Recorder, body: dict[str, Any]) -> None:
        body = assert_problem(await http.post(REGISTER, json=body), 422, "validation_error")

        assert body["errors"]
        assert all(set(error) == {"loc", "msg", "type"} for error in body["errors"])
        http.assert_never_shown(PASSWORD)

    @pytest.mark.parametrize(
        "name", ["line\nbreak", "nul\x00byte", "esc\x1b[31mred", "tab\there", "bidi\u202eevil"]
    )
    async def test_control_characters_in_the_name(self, http: Recorder, name: str) -> None:
        response = await http.post(
            REGISTER, json={"email": "someone@example.com", "password": PASSWORD, "full_name": name}
        )

        assert_problem(response, 422, "validation_error")

    async def test_ten_megabyte_name_is_too_large(self, http: Recorder) -> None:
        body = {"email": "someone@example.com", "password": PASSWORD, "full_name": "x" * 10_000_000}

        response = await http.post(REGISTER, json=body)

        assert_problem(response, 413, "payload_too_large")

    async def test_malformed_json(self, http: Recorder) -> None:
        response = await http.post(
            REGISTER, content=b'{"email": ', headers={"content-type": "application/json"}
        )

        assert_problem(response, 400, "malformed_json")

    async def test_form_encoding_is_refused(self, http: Recorder) -> None:
        response = await http.post(REGISTER, data={"email": "a@example.com", "password": PASSWORD})

        assert_problem(response, 422, "validation_error")
        http.assert_never_shown(PASSWORD)

    async def test_plain_text_is_an_unsupported_media_type(self, http: Recorder) -> None:
        response = await http.post(
            REGISTER, content=b"a@example.com", headers={"content-type": "text/plain"}
        )

        assert_problem(response, 415, "unsupported_media_type")

    @pytest.mark.parametrize(
        "name",
        [
            "Robert'); DROP TABLE user_account;--",
            "<script>alert('x')</script>",
            "O'Brien & <b>Sons</b>",
        ],
    )
    async def test_sql_and_html_in_names_are_stored_as_given_and_escaped_in_html(
        self, sign_up: SignUpFactory, mailbox: Mailbox, name: str
    ) -> None:
        registered = await sign_up(full_name=name)

        assert registered.response.status_code == 202
        assert registered.user.full_name == name
        mail = await mailbox.last(registered.email, "verify_email")
        assert name in mail.message.text
        assert str(escape(name)) in mail.message.html
        assert name not in mail.message.html


class TestVerifyEmail:
    async def test_registration_to_verified_user(
        self, http: Recorder, engine: AsyncEngine, mailbox: Mailbox, new_email: EmailFactory
    ) -> None:
        email = new_email()
        await http.post(REGISTER, json={"email": email, "password": PASSWORD, "full_name": "Ada"})
        token = (await mailbox.last(email, "verify_email")).token

        response = await http.post(VERIFY, json={"token": token})

        assert response.status_code == 200, response.text
        user = response.json()
        assert set(user) == USER_FIELDS
        assert user["email"] == email
        assert user["full_name"] == "Ada"
        assert user["is_verified"] is True
        assert user["roles"] == []
        stored = await user_by_email(engine, email)
        assert stored is not None
        assert stored.is_verified is True
        (event,) = await audit_events(engine, "user.email.verified", about=stored.id)
        assert event.actor_id == stored.id
        assert stored.password_hash is not None
        http.assert_never_shown(PASSWORD, stored.password_hash, token)

    async def test_token_works_once(
        self, http: Recorder, engine: AsyncEngine, sign_up: SignUpFactory
    ) -> None:
        token = (await sign_up()).token

        first = await http.post(VERIFY, json={"token": token})
        second = await http.post(VERIFY, json={"token": token})

        assert first.status_code == 200
        assert_problem(second, 400, "invalid_or_expired_token")
        await refusal(engine, second, "user.email.verify.failed", "used", UUID(first.json()["id"]))

    async def test_expired_token(
        self, http: Recorder, engine: AsyncEngine, sign_up: SignUpFactory
    ) -> None:
        registered = await sign_up()
        await expire(engine, registered.token)

        response = await http.post(VERIFY, json={"token": registered.token})

        assert_problem(response, 400, "invalid_or_expired_token")
        user = await user_by_email(engine, registered.email)
        assert user is not None
        assert user.is_verified is False
        await refusal(engine, response, "user.email.verify.failed", "expired", user.id)

    async def test_unknown_token(self, http: Recorder, engine: AsyncEngine) -> None:
        response = await http.post(VERIFY, json={"token": "x" * 43})

        body = assert_problem(response, 400, "invalid_or_expired_token")
        assert "www-authenticate" not in response.headers
        assert body["detail"]
        event = await refusal(engine, response, "user.email.verify.failed", "unknown_token", None)
        assert (event.target_type, event.data) == (None, {})

    async def test_token_of_another_purpose_is_refused(
        self, http: Recorder, engine: AsyncEngine, sign_up: SignUpFactory
    ) -> None:
        user = (await sign_up()).user
        async with create_sessionmaker(engine)() as session, session.begin():
            reset = await tokens.issue(
                session,
                user_id=user.id,
                purpose=tokens.TokenPurpose.RESET_PASSWORD,
                ttl=timedelta(hours=1),
            )

        response = await http.post(VERIFY, json={"token": reset})

        assert_problem(response, 400, "invalid_or_expired_token")
        await refusal(engine, response, "user.email.verify.failed", "wrong_purpose", user.id)

    async def test_link_for_a_previous_address_is_refused(
        self, http: Recorder, engine: AsyncEngine, sign_up: SignUpFactory, new_email: EmailFactory
    ) -> None:
        registered = await sign_up()
        await set_user(engine, registered.user, email=new_email("moved"))

        response = await http.post(VERIFY, json={"token": registered.token})

        assert_problem(response, 400, "invalid_or_expired_token")
        await refusal(
            engine, response, "user.email.verify.failed", "email_changed", registered.user.id
        )

    async def test_deactivated_account_is_refused_and_keeps_its_token(
        self, http: Recorder, engine: AsyncEngine, sign_up: SignUpFactory
    ) -> None:
        registered = await sign_up()
        token = registered.token
        await set_user(engine, registered.user, is_active=False)

        response = await http.post(VERIFY, json={"token": token})

        assert_problem(response, 400, "invalid_or_expired_token")
        await refusal(engine, response, "user.email.verify.failed", "inactive", registered.user.id)
        # The refusal rolled back the token's consumption, as before it was audited.
        async with create_sessionmaker(engine)() as session:
            stored = await session.exec(
                select(ActionToken).where(col(ActionToken.token_hash) == token_digest(token))
            )
            assert stored.one().used_at is None

    @pytest.mark.parametrize(
        "body", [{}, {"token": ""}, {"token": 123}, {"token": None}, {"token": "t" * 257}]
    )
    async def test_invalid_bodies(self, http: Recorder, body: dict[str, Any]) -> None:
        assert_problem(await http.post(VERIFY, json=body), 422, "validation_error")


class TestResend:
    async def test_new_link_retires_the_old_one(
        self, http: Recorder, mailbox: Mailbox, sign_up: SignUpFactory
    ) -> None:
        registered = await sign_up()
        old = registered.token

        response = await http.post(RESEND, json={"email": registered.email})

        assert response.status_code == 202
        new = (await mailbox.last(registered.email, "verify_email")).token
        assert new != old
        assert_problem(
            await http.post(VERIFY, json={"token": old}), 400, "invalid_or_expired_token"
        )
        assert (await http.post(VERIFY, json={"token": new})).status_code == 200
        http.assert_never_shown(old, new, PASSWORD)

    async def test_same_answer_for_unknown_verified_and_unverified(
        self, http: Recorder, mailbox: Mailbox, new_email: EmailFactory
    ) -> None:
        unverified, verified, unknown = new_email(), new_email(), new_email()
        for email in (unverified, verified):
            await http.post(REGISTER, json={"email": email, "password": PASSWORD})
        token = (await mailbox.last(verified, "verify_email")).token
        assert (await http.post(VERIFY, json={"token": token})).status_code == 200

        answers = [
            await http.post(RESEND, json={"email": email})
            for email in (unverified, verified, unknown)
        ]

        assert {answer.status_code for answer in answers} == {202}
        assert len({answer.text for answer in answers}) == 1
        assert len(await mailbox.to(unverified, "verify_email")) == 2
        assert len(await mailbox.to(verified, "verify_email")) == 1
        assert await mailbox.to(unknown) == []

    async def test_inactive_user_gets_nothing(
        self, http: Recorder, engine: AsyncEngine, mailbox: Mailbox, sign_up: SignUpFactory
    ) -> None:
        registered = await sign_up()
        await set_user(engine, registered.user, is_active=False)

        response = await http.post(RESEND, json={"email": registered.email})

        assert response.status_code == 202
        assert len(await mailbox.to(registered.email, "verify_email")) == 1

    @pytest.mark.parametrize(
        "body", [{}, {"email": "nope"}, {"email": 5}, {"email": "a@b.c", "x": 1}]
    )
    async def test_invalid_bodies(self, http: Recorder, body: dict[str, Any]) -> None:
        assert_problem(await http.post(RESEND, json=body), 422, "validation_error")


class TestConcurrentRegistration:
    async def test_fifty_registrations_of_one_address_make_one_user(
        self, http: Recorder, engine: AsyncEngine, mailbox: Mailbox, new_email: EmailFactory
    ) -> None:
        email = new_email("race")
        body = {"email": email, "password": PASSWORD, "full_name": "Racer"}

        responses = await asyncio.gather(*(http.post(REGISTER, json=body) for _ in range(50)))

        assert [response.status_code for response in responses] == [202] * 50, {
            response.text for response in responses
        }
        assert len({response.text for response in responses}) == 1
        users = await users_with_email(engine, email)
        assert len(users) == 1
        assert len(await mailbox.to(email, "verify_email")) == 1
        assert len(await mailbox.to(email, "account_exists")) == 49
        assert len(await audit_events(engine, "user.registered", about=users[0].id)) == 1
        assert len(await audit_events(engine, "user.register.duplicate", about=users[0].id)) == 49


class TestDelivery:
    async def test_verification_email_is_delivered_and_its_link_works(
        self,
        make_app: AppFactory,
        own_settings: Settings,
        auth_settings: AuthSettings,
        passwords: Passwords,
        fake_resend: FakeResend,
        new_email: EmailFactory,
    ) -> None:
        # A database of its own: the dispatcher sends every pending message, and the
        # run's shared outbox holds whatever earlier tests queued.
        settings = fake_resend.sending(own_settings)
        email = new_email("delivered")
        name = "<b>Ada</b> & co"

        async with serve(make_app(settings, auth_settings, passwords)) as client:
            registered = await client.post(
                REGISTER, json={"email": email, "password": PASSWORD, "full_name": name}
            )
            sent = await delivered_to(fake_resend, email)
            token = link_token(sent["text"], "verify-email")
            verified = await client.post(VERIFY, json={"token": token})

        assert registered.status_code == 202
        assert sent["subject"].startswith("Confirm your email address")
        assert name in sent["text"]
        assert "&lt;b&gt;Ada&lt;/b&gt; &amp; co" in sent["html"]
        assert verified.status_code == 200, verified.text
        assert verified.json()["is_verified"] is True


async def delivered_to(fake: FakeResend, address: str) -> dict[str, Any]:
    """Waits for the dispatcher to hand the fake a message to ``address``."""
    async with asyncio.timeout(15):
        while True:
            for email in fake.emails:
                if email.get("to") == [address]:
                    return email
            await asyncio.sleep(0.02)


CONFIRM = "/api/v1/auth/confirm-email"


async def change_email_token(engine: AsyncEngine, user: User, new_email: str) -> str:
    """What ``POST /users/me/email`` leaves behind: a CHANGE_EMAIL token for the new address."""
    async with create_sessionmaker(engine)() as session, session.begin():
        return await tokens.issue(
            session,
            user_id=user.id,
            purpose=tokens.TokenPurpose.CHANGE_EMAIL,
            ttl=timedelta(hours=24),
            data={"new_email": new_email},
        )


class TestConfirmEmail:
    async def test_completes_the_change_and_verifies_the_new_address(
        self, http: Recorder, engine: AsyncEngine, sign_up: SignUpFactory, new_email: EmailFactory
    ) -> None:
        registered = await sign_up(prefix="old")
        user, verification, new = registered.user, registered.token, new_email("new")
        token = await change_email_token(engine, user, new)

        response = await http.post(CONFIRM, json={"token": token})

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == USER_FIELDS
        assert body["email"] == new
        assert body["is_verified"] is True
        again = await http.post(CONFIRM, json={"token": token})
        assert again.status_code == 400
        assert again.json()["status"] == 400
        await refusal(engine, again, "user.email.change.failed", "used", user.id)
        # The verification link of the old address proves nothing about the new one.
        stale = await http.post(VERIFY, json={"token": verification})
        assert_problem(stale, 400, "invalid_or_expired_token")
        http.assert_never_shown(token, verification, PASSWORD)

    async def test_unknown_token(self, http: Recorder, engine: AsyncEngine) -> None:
        response = await http.post(CONFIRM, json={"token": "y" * 43})

        assert response.status_code == 400
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert "www-authenticate" not in response.headers
        await refusal(engine, response, "user.email.change.failed", "unknown_token", None)

    async def test_verification_token_is_not_a_change_token(
        self, http: Recorder, engine: AsyncEngine, sign_up: SignUpFactory
    ) -> None:
        registered = await sign_up()

        response = await http.post(CONFIRM, json={"token": registered.token})

        assert response.status_code == 400
        await refusal(
            engine, response, "user.email.change.failed", "wrong_purpose", registered.user.id
        )

    @pytest.mark.parametrize("body", [{}, {"token": ""}, {"token": 1}, {"token": "t" * 257}])
    async def test_invalid_bodies(self, http: Recorder, body: dict[str, Any]) -> None:
        assert_problem(await http.post(CONFIRM, json=body), 422, "validation_error")
