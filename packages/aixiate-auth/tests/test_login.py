"""Login over HTTP: ``POST /auth/login`` and the OAuth2 password form ``POST /auth/token``."""

import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

import bcrypt
import httpx
import pytest
from aixiate_auth.models import AuthSession
from aixiate_auth.settings import AuthSettings
from aixiate_auth.testing import AuthAppVariant, UserFactory, jwt_part
from aixiate_core.testing import Sessions, assert_problem, bearer, serve
from aixiate_users.models import User
from aixiate_users.testing import PASSWORD, WRONG_PASSWORD, audit_events
from argon2 import PasswordHasher
from argon2 import Type as Argon2Type
from sqlmodel import col, select

LOGIN = "/api/v1/auth/login"
TOKEN = "/api/v1/auth/token"
ME = "/api/v1/users/me"
JWKS = "/.well-known/jwks.json"
TOKEN_PAIR_FIELDS = {
    "access_token",
    "refresh_token",
    "token_type",
    "expires_in",
    "refresh_expires_in",
}
#: What the test settings configure (conftest.fast_auth_settings).
CHEAP_ARGON2 = "$argon2id$v=19$m=1024,t=1,p=1$"


async def stored_user(db: Sessions, user_id: UUID) -> User:
    async with db() as session:
        user = await session.get(User, user_id)
    assert user is not None
    return user


async def sessions_of(db: Sessions, user_id: UUID) -> list[AuthSession]:
    async with db() as session:
        statement = select(AuthSession).where(col(AuthSession.user_id) == user_id)
        return list((await session.exec(statement)).all())


def legacy_argon2(password: str, *, memory_kib: int, time_cost: int) -> str:
    hasher = PasswordHasher(
        time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=Argon2Type.ID
    )
    return hasher.hash(password)


class TestLogin:
    async def test_answers_a_token_pair_that_is_not_cached(
        self, api: httpx.AsyncClient, make_user: UserFactory, auth_settings: AuthSettings
    ) -> None:
        user = await make_user()

        response = await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})

        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"
        pair = response.json()
        assert set(pair) == TOKEN_PAIR_FIELDS
        assert pair["token_type"] == "bearer"
        assert 0 < pair["expires_in"] <= auth_settings.access_token_ttl_seconds
        assert 0 < pair["refresh_expires_in"] <= auth_settings.refresh_token_ttl_seconds
        # Opaque and high-entropy: not a JWT, nothing readable in it.
        assert "." not in pair["refresh_token"]
        assert len(pair["refresh_token"]) >= 43

    async def test_access_token_carries_the_documented_claims(
        self, api: httpx.AsyncClient, make_user: UserFactory, auth_settings: AuthSettings
    ) -> None:
        user = await make_user(roles=["editor", "admin"])

        pair = (await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})).json()

        header = jwt_part(pair["access_token"], 0)
        claims = jwt_part(pair["access_token"], 1)
        assert header["alg"] == "ES256"
        jwks = (await api.get(JWKS)).json()
        assert header["kid"] in {key["kid"] for key in jwks["keys"]}
        assert claims["iss"] == auth_settings.issuer
        assert claims["aud"] == auth_settings.audience
        assert claims["sub"] == str(user.id)
        assert claims["typ"] == "access"
        assert claims["roles"] == ["admin", "editor"]
        assert claims["jti"]
        assert claims["exp"] - claims["iat"] == auth_settings.access_token_ttl_seconds
        (stored,) = await sessions_of_user(api, pair["access_token"])
        assert claims["sid"] == stored["id"]

    async def test_access_token_opens_the_callers_account(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        pair = (await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})).json()

        me = await api.get(ME, headers=bearer(pair["access_token"]))

        assert me.status_code == 200, me.text
        assert me.json()["id"] == str(user.id)

    async def test_email_is_matched_regardless_of_case_and_spaces(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()

        response = await api.post(
            LOGIN, json={"email": f" {user.email.upper()} ", "password": PASSWORD}
        )

        assert response.status_code == 200, response.text

    async def test_each_login_is_a_session_of_its_own(
        self, api: httpx.AsyncClient, make_user: UserFactory, db: Sessions
    ) -> None:
        user = await make_user()

        first = (await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})).json()
        second = (await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})).json()

        assert (
            jwt_part(first["access_token"], 1)["sid"] != jwt_part(second["access_token"], 1)["sid"]
        )
        assert first["refresh_token"] != second["refresh_token"]
        stored = await sessions_of(db, user.id)
        assert len(stored) == 2
        assert {s.ip for s in stored} == {"203.0.113.7"}


async def sessions_of_user(api: httpx.AsyncClient, access_token: str) -> list[dict[str, Any]]:
    response = await api.get("/api/v1/auth/sessions", headers=bearer(access_token))
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


class TestRefusals:
    async def test_unknown_email_and_wrong_password_answer_alike(
        self, api: httpx.AsyncClient, make_user: UserFactory, new_email: Callable[..., str]
    ) -> None:
        user = await make_user()

        unknown = await api.post(LOGIN, json={"email": new_email(), "password": PASSWORD})
        wrong = await api.post(LOGIN, json={"email": user.email, "password": PASSWORD + "x"})

        bodies = [
            assert_problem(response, 401, "invalid_credentials") for response in (unknown, wrong)
        ]
        for body in bodies:
            del body["request_id"]
        assert bodies[0] == bodies[1]
        assert unknown.headers["www-authenticate"] == wrong.headers["www-authenticate"] == "Bearer"
        assert "access_token" not in unknown.text

    @pytest.mark.parametrize(
        ("state", "code"),
        [
            ({"is_verified": False}, "email_not_verified"),
            ({"is_active": False}, "account_inactive"),
        ],
        ids=["unverified", "inactive"],
    )
    async def test_account_is_refused_only_after_the_right_password(
        self, api: httpx.AsyncClient, make_user: UserFactory, state: dict[str, bool], code: str
    ) -> None:
        user = await make_user(**state)

        wrong = await api.post(LOGIN, json={"email": user.email, "password": WRONG_PASSWORD})
        right = await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})

        assert_problem(wrong, 401, "invalid_credentials")
        assert_problem(right, 403, code)
        assert "access_token" not in right.text

    async def test_unverified_account_may_log_in_when_verification_is_not_required(
        self, app_with: AuthAppVariant, make_user: UserFactory
    ) -> None:
        user = await make_user(is_verified=False)

        async with serve(app_with(require_email_verification=False)) as client:
            response = await client.post(LOGIN, json={"email": user.email, "password": PASSWORD})

        assert response.status_code == 200, response.text
        assert set(response.json()) == TOKEN_PAIR_FIELDS

    async def test_inactive_wins_over_unverified(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user(is_active=False, is_verified=False)

        response = await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})

        assert_problem(response, 403, "account_inactive")

    async def test_account_without_a_password_cannot_log_in(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user(password_hash=None)

        response = await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})

        assert_problem(response, 401, "invalid_credentials")

    async def test_refusals_start_no_session(
        self, api: httpx.AsyncClient, make_user: UserFactory, db: Sessions
    ) -> None:
        unverified = await make_user(is_verified=False)
        inactive = await make_user(is_active=False)

        await api.post(LOGIN, json={"email": unverified.email, "password": PASSWORD})
        await api.post(LOGIN, json={"email": inactive.email, "password": PASSWORD})
        await api.post(LOGIN, json={"email": inactive.email, "password": "wrong-password"})

        assert await sessions_of(db, unverified.id) == []
        assert await sessions_of(db, inactive.id) == []

    @pytest.mark.parametrize(
        "body",
        [
            {"email": "someone@example.com"},
            {"password": PASSWORD},
            {"email": "someone@example.com", "password": ""},
            {"email": "someone@example.com", "password": PASSWORD, "remember": True},
            {"email": 42, "password": PASSWORD},
        ],
        ids=["no-password", "no-email", "empty-password", "unknown-field", "number-email"],
    )
    async def test_invalid_bodies(self, api: httpx.AsyncClient, body: dict[str, Any]) -> None:
        response = await api.post(LOGIN, json=body)

        assert_problem(response, 422, "validation_error")


class TestAudit:
    async def test_success_is_recorded_with_the_session(
        self, api: httpx.AsyncClient, make_user: UserFactory, db: Sessions
    ) -> None:
        user = await make_user()

        response = await api.post(
            LOGIN,
            json={"email": user.email, "password": PASSWORD},
            headers={"User-Agent": "audit-test/1.0"},
        )

        (event,) = await audit_events(db, response=response)
        assert event.event_type == "auth.login.succeeded"
        assert event.success is True
        assert event.actor_id == user.id
        assert event.target_type == "user"
        assert event.target_id == str(user.id)
        assert event.ip == "203.0.113.7"
        assert event.user_agent == "audit-test/1.0"
        assert event.data["session_id"] == jwt_part(response.json()["access_token"], 1)["sid"]
        assert event.data["rehashed"] is False

    @pytest.mark.parametrize(
        ("reason", "overrides", "password", "status"),
        [
            ("bad_password", {}, "not-the-password", 401),
            ("inactive", {"is_active": False}, PASSWORD, 403),
            ("unverified", {"is_verified": False}, PASSWORD, 403),
        ],
    )
    async def test_failure_is_committed_although_the_request_failed(
        self,
        api: httpx.AsyncClient,
        make_user: UserFactory,
        db: Sessions,
        reason: str,
        overrides: dict[str, Any],
        password: str,
        status: int,
    ) -> None:
        user = await make_user(**overrides)

        response = await api.post(LOGIN, json={"email": user.email, "password": password})

        assert response.status_code == status
        (event,) = await audit_events(db, response=response)
        assert event.event_type == "auth.login.failed"
        assert event.success is False
        assert event.reason == reason
        assert event.actor_id == user.id
        assert event.target_id == str(user.id)
        assert event.ip == "203.0.113.7"

    async def test_unknown_user_is_recorded_without_an_actor(
        self, api: httpx.AsyncClient, db: Sessions, new_email: Callable[..., str]
    ) -> None:
        email = new_email("nobody")

        response = await api.post(LOGIN, json={"email": email, "password": PASSWORD})

        (event,) = await audit_events(db, response=response)
        assert event.event_type == "auth.login.failed"
        assert event.reason == "unknown_user"
        assert event.actor_id is None
        assert event.target_id is None
        # The address someone tried is not kept in the trail.
        assert email not in json.dumps(event.data)


class TestPasswordForm:
    async def test_form_login_answers_a_token_pair(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()

        response = await api.post(TOKEN, data={"username": user.email, "password": PASSWORD})

        assert response.status_code == 200, response.text
        assert set(response.json()) == TOKEN_PAIR_FIELDS
        assert response.headers["cache-control"] == "no-store"
        me = await api.get(ME, headers=bearer(response.json()["access_token"]))
        assert me.status_code == 200

    async def test_same_rules_as_login(
        self, api: httpx.AsyncClient, make_user: UserFactory, new_email: Callable[..., str]
    ) -> None:
        unverified = await make_user(is_verified=False)
        inactive = await make_user(is_active=False)

        unknown = await api.post(TOKEN, data={"username": new_email(), "password": PASSWORD})
        wrong = await api.post(TOKEN, data={"username": inactive.email, "password": "nope-nope"})
        not_verified = await api.post(
            TOKEN, data={"username": unverified.email, "password": PASSWORD}
        )
        deactivated = await api.post(TOKEN, data={"username": inactive.email, "password": PASSWORD})

        assert_problem(unknown, 401, "invalid_credentials")
        assert_problem(wrong, 401, "invalid_credentials")
        assert unknown.headers["www-authenticate"] == "Bearer"
        assert_problem(not_verified, 403, "email_not_verified")
        assert_problem(deactivated, 403, "account_inactive")

    async def test_json_body_is_not_a_form(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()

        response = await api.post(TOKEN, json={"username": user.email, "password": PASSWORD})

        assert_problem(response, 422, "validation_error")


class TestRehash:
    async def test_legacy_bcrypt_hash_becomes_argon2id(
        self, api: httpx.AsyncClient, make_user: UserFactory, db: Sessions
    ) -> None:
        legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        user = await make_user(password_hash=legacy)

        response = await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})

        assert response.status_code == 200, response.text
        stored = await stored_user(db, user.id)
        assert stored.password_hash is not None
        assert stored.password_hash.startswith(CHEAP_ARGON2)
        (event,) = await audit_events(db, response=response)
        assert event.data["rehashed"] is True
        again = await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})
        assert again.status_code == 200
        assert (await stored_user(db, user.id)).password_hash == stored.password_hash

    async def test_outdated_argon2_parameters_are_rehashed(
        self, api: httpx.AsyncClient, make_user: UserFactory, db: Sessions
    ) -> None:
        outdated = legacy_argon2(PASSWORD, memory_kib=2048, time_cost=2)
        user = await make_user(password_hash=outdated)

        response = await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})

        assert response.status_code == 200, response.text
        stored = await stored_user(db, user.id)
        assert stored.password_hash is not None
        assert stored.password_hash.startswith(CHEAP_ARGON2)

    async def test_current_hash_is_left_alone(
        self, api: httpx.AsyncClient, make_user: UserFactory, db: Sessions
    ) -> None:
        user = await make_user()

        response = await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})

        assert response.status_code == 200
        assert (await stored_user(db, user.id)).password_hash == user.password_hash

    @pytest.mark.parametrize("kind", ["bcrypt", "argon2"])
    async def test_wrong_password_rehashes_nothing(
        self, api: httpx.AsyncClient, make_user: UserFactory, db: Sessions, kind: str
    ) -> None:
        if kind == "bcrypt":
            legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        else:
            legacy = legacy_argon2(PASSWORD, memory_kib=2048, time_cost=2)
        user = await make_user(password_hash=legacy)

        response = await api.post(LOGIN, json={"email": user.email, "password": "wrong-password"})

        assert_problem(response, 401, "invalid_credentials")
        assert (await stored_user(db, user.id)).password_hash == legacy

    async def test_refused_unverified_login_keeps_the_legacy_hash(
        self, api: httpx.AsyncClient, make_user: UserFactory, db: Sessions
    ) -> None:
        # The request fails, so nothing it changed may stick.
        legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        user = await make_user(password_hash=legacy, is_verified=False)

        response = await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})

        assert_problem(response, 403, "email_not_verified")
        assert (await stored_user(db, user.id)).password_hash == legacy
