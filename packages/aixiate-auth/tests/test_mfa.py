"""Two-step verification over HTTP: enrolling, the second step of a login, recovery
codes, turning it off, the admin reset, MFA-required roles, and the verifier's view.

TOTP codes are computed as an authenticator app computes them (``pyotp``), on a clock
the test moves: the service module's ``time`` is replaced, so each step's code is known.
"""

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs, urlparse
from uuid import uuid4

import httpx
import pyotp
import pytest
from aixiate_auth import mfa as mfa_module
from aixiate_auth.client import JWKSTokenVerifier
from aixiate_auth.models import RecoveryCode, TotpCredential
from aixiate_auth.services import mfa as mfa_service_module
from aixiate_auth.services.mfa import TOTP_BOX_PURPOSE
from aixiate_auth.settings import AuthSettings
from aixiate_auth.testing import AuthAppFactory, AuthAppVariant, UserFactory, jwt_part
from aixiate_core.crypto import SecretBox, token_digest
from aixiate_core.errors import install_error_handlers
from aixiate_core.security import Principal
from aixiate_core.settings import Settings
from aixiate_core.store import KeyValueStore
from aixiate_core.testing import FakeClock, Sessions, assert_problem, bearer, serve
from aixiate_core.testing.mail import Mailbox
from aixiate_users.models import User
from aixiate_users.testing import PASSWORD, WRONG_PASSWORD, audit_events
from fastapi import Depends, FastAPI
from sqlmodel import col, select

API = "/api/v1"
LOGIN = f"{API}/auth/login"
LOGIN_MFA = f"{API}/auth/login/mfa"
TOKEN = f"{API}/auth/token"
REFRESH = f"{API}/auth/refresh"
STATUS = f"{API}/auth/mfa"
SETUP = f"{API}/auth/mfa/totp/setup"
CONFIRM = f"{API}/auth/mfa/totp/confirm"
DISABLE = f"{API}/auth/mfa/totp"
CODES = f"{API}/auth/mfa/recovery-codes"
ME = f"{API}/users/me"
USERS = f"{API}/users"
JWKS_URL = "http://aixiate.test/.well-known/jwks.json"
RECOVERY_CODE = re.compile(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The service's TOTP clock, at the start of a 30-second step."""
    fake = FakeClock()
    fake.now = float(int(fake.now) // 30 * 30)
    monkeypatch.setattr(mfa_service_module, "time", fake)
    return fake


@dataclass
class Enrolled:
    """A user with MFA on, an app signed in as them, and what enrolling handed out."""

    user: User
    access_token: str
    secret: str
    recovery_codes: list[str]
    clock: FakeClock

    def code(self, steps_ahead: int = 0) -> str:
        """What the authenticator app shows now (or ``steps_ahead`` steps later)."""
        return pyotp.TOTP(self.secret).at(self.clock.now + 30 * steps_ahead)

    def next_code(self) -> str:
        """Moves to the next step and answers its code: a code not yet used."""
        self.clock.advance(30)
        return self.code()


async def setup_and_confirm(
    api: httpx.AsyncClient, token: str, clock: FakeClock
) -> tuple[str, list[str]]:
    setup = await api.post(SETUP, headers=bearer(token))
    assert setup.status_code == 200, setup.text
    secret: str = setup.json()["secret"]
    confirm = await api.post(
        CONFIRM, json={"code": pyotp.TOTP(secret).at(clock.now)}, headers=bearer(token)
    )
    assert confirm.status_code == 200, confirm.text
    codes: list[str] = confirm.json()["recovery_codes"]
    return secret, codes


@pytest.fixture
def enroll(api: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock) -> Any:
    async def do(**columns: Any) -> Enrolled:
        user = await make_user(**columns)
        pair = await password_login(api, user.email)
        secret, codes = await setup_and_confirm(api, pair["access_token"], clock)
        return Enrolled(user, pair["access_token"], secret, codes, clock)

    return do


async def password_login(
    api: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> dict[str, Any]:
    response = await api.post(LOGIN, json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def challenge(api: httpx.AsyncClient, enrolled: Enrolled) -> str:
    body = await password_login(api, enrolled.user.email)
    assert body["mfa_required"] is True, body
    token: str = body["mfa_token"]
    return token


async def second_step(api: httpx.AsyncClient, mfa_token: str, code: str) -> httpx.Response:
    return await api.post(LOGIN_MFA, json={"mfa_token": mfa_token, "code": code})


async def row_of(db: Sessions, user: User) -> TotpCredential | None:
    async with db() as session:
        statement = select(TotpCredential).where(col(TotpCredential.user_id) == user.id)
        return (await session.exec(statement)).first()


async def codes_of(db: Sessions, user: User) -> list[RecoveryCode]:
    async with db() as session:
        statement = select(RecoveryCode).where(col(RecoveryCode.user_id) == user.id)
        return list((await session.exec(statement)).all())


class TestEnrollment:
    async def test_setup_hands_out_a_secret_an_otpauth_uri_and_its_qr_code(
        self, api: httpx.AsyncClient, make_user: UserFactory, app_settings: Settings
    ) -> None:
        user = await make_user()
        token = (await password_login(api, user.email))["access_token"]

        response = await api.post(SETUP, headers=bearer(token))

        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert set(body) == {"secret", "otpauth_uri", "qr_svg"}
        assert re.fullmatch(r"[A-Z2-7]{32}", body["secret"])  # base32, 160 bits
        uri = urlparse(body["otpauth_uri"])
        assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
        query = parse_qs(uri.query)
        assert query["secret"] == [body["secret"]]
        assert query["issuer"] == [app_settings.product_name]
        assert user.email in uri.path.replace("%40", "@")
        parsed = pyotp.parse_uri(body["otpauth_uri"])
        assert isinstance(parsed, pyotp.TOTP)
        assert (parsed.digits, parsed.interval) == (6, 30)
        assert body["qr_svg"].startswith("<svg")
        assert 'xmlns="http://www.w3.org/2000/svg"' in (body["qr_svg"])
        status = (await api.get(STATUS, headers=bearer(token))).json()
        assert status == {"enabled": False, "methods": [], "recovery_codes_remaining": 0}

    async def test_confirming_turns_mfa_on_and_hands_out_ten_recovery_codes(
        self,
        api: httpx.AsyncClient,
        make_user: UserFactory,
        clock: FakeClock,
        db: Sessions,
        mailbox: Mailbox,
    ) -> None:
        user = await make_user()
        token = (await password_login(api, user.email))["access_token"]

        secret, codes = await setup_and_confirm(api, token, clock)

        assert len(codes) == len(set(codes)) == 10
        assert all(RECOVERY_CODE.fullmatch(code) for code in codes)
        status = (await api.get(STATUS, headers=bearer(token))).json()
        assert status == {
            "enabled": True,
            "methods": ["totp", "recovery_code"],
            "recovery_codes_remaining": 10,
        }
        assert (await api.get(ME, headers=bearer(token))).json()["mfa_enabled"] is True
        await mailbox.last(user.email, "mfa_enabled")
        assert len(await audit_events(db, "auth.mfa.enabled", about=user.id)) == 1
        # At rest: the secret sealed, the codes as digests only.
        row = await row_of(db, user)
        assert row is not None
        assert row.confirmed_at is not None
        assert secret.encode() not in row.secret
        stored = {code.code_hash for code in await codes_of(db, user)}
        assert stored == {token_digest(code.replace("-", "")) for code in codes}

    async def test_a_wrong_code_is_refused_and_mfa_stays_off(
        self, api: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock, db: Sessions
    ) -> None:
        user = await make_user()
        token = (await password_login(api, user.email))["access_token"]
        secret = (await api.post(SETUP, headers=bearer(token))).json()["secret"]
        wrong = pyotp.TOTP(secret).at(clock.now + 300)

        response = await api.post(CONFIRM, json={"code": wrong}, headers=bearer(token))

        assert_problem(response, 400, "invalid_mfa_code")
        assert (await api.get(STATUS, headers=bearer(token))).json()["enabled"] is False
        [failed] = await audit_events(db, "auth.mfa.failed", about=user.id)
        assert failed.reason == "bad_code"

    async def test_setup_again_replaces_the_pending_secret(
        self, api: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock
    ) -> None:
        user = await make_user()
        token = (await password_login(api, user.email))["access_token"]
        first = (await api.post(SETUP, headers=bearer(token))).json()["secret"]
        second = (await api.post(SETUP, headers=bearer(token))).json()["secret"]
        assert first != second

        stale = await api.post(
            CONFIRM, json={"code": pyotp.TOTP(first).at(clock.now)}, headers=bearer(token)
        )
        fresh = await api.post(
            CONFIRM, json={"code": pyotp.TOTP(second).at(clock.now)}, headers=bearer(token)
        )

        assert_problem(stale, 400, "invalid_mfa_code")
        assert fresh.status_code == 200, fresh.text

    async def test_confirm_without_setup_is_refused(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        token = (await password_login(api, user.email))["access_token"]

        response = await api.post(CONFIRM, json={"code": "123456"}, headers=bearer(token))

        assert_problem(response, 400, "invalid_mfa_code")

    async def test_setup_and_confirm_answer_409_once_mfa_is_on(
        self, api: httpx.AsyncClient, enroll: Any
    ) -> None:
        enrolled: Enrolled = await enroll()

        again = await api.post(SETUP, headers=bearer(enrolled.access_token))
        confirm = await api.post(
            CONFIRM, json={"code": enrolled.next_code()}, headers=bearer(enrolled.access_token)
        )

        assert_problem(again, 409, "mfa_already_enabled")
        assert_problem(confirm, 409, "mfa_already_enabled")

    async def test_the_routes_need_a_token(self, api: httpx.AsyncClient) -> None:
        for method, path in (("GET", STATUS), ("POST", SETUP), ("POST", CONFIRM)):
            response = await api.request(method, path, json={"code": "123456"})
            assert_problem(response, 401, "not_authenticated")

    async def test_no_secret_or_code_reaches_the_audit_log(
        self, api: httpx.AsyncClient, enroll: Any, db: Sessions
    ) -> None:
        enrolled: Enrolled = await enroll()
        token = await challenge(api, enrolled)
        assert (await second_step(api, token, enrolled.recovery_codes[0])).status_code == 200

        events = await audit_events(db, about=enrolled.user.id)

        text = " ".join(f"{event.data} {event.reason}" for event in events)
        assert {e.event_type for e in events} >= {
            "auth.mfa.setup_started",
            "auth.mfa.enabled",
            "auth.mfa.challenged",
            "auth.mfa.succeeded",
            "auth.mfa.recovery_code_used",
        }
        assert enrolled.secret not in text
        assert not any(code in text for code in enrolled.recovery_codes)
        assert token not in text


class TestSecondStep:
    async def test_a_password_alone_gets_a_challenge_and_no_tokens(
        self, api: httpx.AsyncClient, enroll: Any
    ) -> None:
        enrolled: Enrolled = await enroll()

        response = await api.post(LOGIN, json={"email": enrolled.user.email, "password": PASSWORD})

        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert set(body) == {"mfa_required", "mfa_token", "mfa_methods"}
        assert body["mfa_required"] is True
        assert body["mfa_methods"] == ["totp", "recovery_code"]
        assert len(body["mfa_token"]) >= 43

    async def test_a_totp_code_finishes_the_login_with_amr_otp(
        self, api: httpx.AsyncClient, enroll: Any, db: Sessions
    ) -> None:
        enrolled: Enrolled = await enroll()
        token = await challenge(api, enrolled)

        response = await second_step(api, token, enrolled.next_code())

        assert response.status_code == 200, response.text
        pair = response.json()
        assert jwt_part(pair["access_token"], 1)["amr"] == ["pwd", "otp", "mfa"]
        assert (await api.get(ME, headers=bearer(pair["access_token"]))).status_code == 200
        [succeeded] = await audit_events(db, "auth.mfa.succeeded", about=enrolled.user.id)
        assert succeeded.data == {"method": "totp"}
        logins = await audit_events(db, "auth.login.succeeded", response=response)
        assert [event.data["amr"] for event in logins] == [["pwd", "otp", "mfa"]]

    async def test_a_refresh_keeps_the_amr_of_the_login(
        self, api: httpx.AsyncClient, enroll: Any
    ) -> None:
        enrolled: Enrolled = await enroll()
        pair = (await second_step(api, await challenge(api, enrolled), enrolled.next_code())).json()

        refreshed = await api.post(REFRESH, json={"refresh_token": pair["refresh_token"]})

        assert refreshed.status_code == 200, refreshed.text
        assert jwt_part(refreshed.json()["access_token"], 1)["amr"] == ["pwd", "otp", "mfa"]

    async def test_a_password_only_login_says_pwd(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()

        pair = await password_login(api, user.email)

        assert jwt_part(pair["access_token"], 1)["amr"] == ["pwd"]

    async def test_a_totp_code_works_once(self, api: httpx.AsyncClient, enroll: Any) -> None:
        enrolled: Enrolled = await enroll()
        code = enrolled.next_code()
        first = await second_step(api, await challenge(api, enrolled), code)
        assert first.status_code == 200, first.text

        replay = await second_step(api, await challenge(api, enrolled), code)

        assert_problem(replay, 401, "invalid_mfa_code")
        assert replay.headers["www-authenticate"] == "Bearer"

    async def test_the_code_that_confirmed_cannot_log_in(
        self, api: httpx.AsyncClient, enroll: Any
    ) -> None:
        enrolled: Enrolled = await enroll()

        response = await second_step(api, await challenge(api, enrolled), enrolled.code())

        assert_problem(response, 401, "invalid_mfa_code")

    async def test_an_earlier_step_is_refused_after_a_later_one_was_used(
        self, api: httpx.AsyncClient, enroll: Any
    ) -> None:
        enrolled: Enrolled = await enroll()
        enrolled.clock.advance(60)
        earlier, later = enrolled.code(-1), enrolled.code()
        assert (await second_step(api, await challenge(api, enrolled), later)).status_code == 200

        response = await second_step(api, await challenge(api, enrolled), earlier)

        assert_problem(response, 401, "invalid_mfa_code")

    async def test_one_step_of_drift_either_way_and_no_more(
        self, api: httpx.AsyncClient, enroll: Any, app_with: AuthAppVariant
    ) -> None:
        enrolled: Enrolled = await enroll()
        enrolled.clock.advance(300)

        behind = await second_step(api, await challenge(api, enrolled), enrolled.code(-1))
        ahead = await second_step(api, await challenge(api, enrolled), enrolled.code(1))
        too_far = await second_step(api, await challenge(api, enrolled), enrolled.code(3))

        assert behind.status_code == 200, behind.text
        assert ahead.status_code == 200, ahead.text
        assert_problem(too_far, 401, "invalid_mfa_code")

    async def test_the_mfa_token_works_once(self, api: httpx.AsyncClient, enroll: Any) -> None:
        enrolled: Enrolled = await enroll()
        token = await challenge(api, enrolled)
        assert (await second_step(api, token, enrolled.next_code())).status_code == 200

        again = await second_step(api, token, enrolled.next_code())

        assert_problem(again, 401, "invalid_mfa_token")

    async def test_an_unknown_mfa_token_is_refused(self, api: httpx.AsyncClient) -> None:
        response = await second_step(api, "not-a-token-we-issued", "123456")

        assert_problem(response, 401, "invalid_mfa_token")

    @pytest.mark.parametrize(
        "body",
        [
            {"mfa_token": "x" * 257, "code": "123456"},
            {"mfa_token": "t", "code": "1" * 65},
            {"mfa_token": "t", "code": ""},
            {"mfa_token": "t"},
            {"mfa_token": "t", "code": 123456},
            {"mfa_token": "t", "code": "123456", "trust_device": True},
        ],
    )
    async def test_malformed_bodies_are_validation_errors(
        self, api: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        response = await api.post(LOGIN_MFA, json=body)

        assert_problem(response, 422, "validation_error")

    async def test_the_mfa_token_lives_five_minutes_in_the_shared_store(
        self, api: httpx.AsyncClient, enroll: Any, store: KeyValueStore
    ) -> None:
        enrolled: Enrolled = await enroll()
        token = await challenge(api, enrolled)

        ttl = await store.ttl(f"auth:mfa:challenge:{token_digest(token)}")

        assert ttl is not None
        assert 290 < ttl <= 300

    async def test_an_expired_mfa_token_is_refused(
        self, api: httpx.AsyncClient, enroll: Any, store: KeyValueStore
    ) -> None:
        enrolled: Enrolled = await enroll()
        token = await challenge(api, enrolled)
        # What the store does when the five minutes are up.
        await store.delete(f"auth:mfa:challenge:{token_digest(token)}")

        response = await second_step(api, token, enrolled.next_code())

        assert_problem(response, 401, "invalid_mfa_token")

    async def test_a_new_password_voids_pending_mfa_tokens(
        self, api: httpx.AsyncClient, enroll: Any, db: Sessions
    ) -> None:
        enrolled: Enrolled = await enroll()
        token = await challenge(api, enrolled)
        async with db() as session, session.begin():
            user = await session.get(User, enrolled.user.id)
            assert user is not None
            user.password_hash = "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHQ$changed"

        response = await second_step(api, token, enrolled.next_code())

        assert_problem(response, 401, "invalid_mfa_token")

    async def test_a_deactivated_account_cannot_finish(
        self, api: httpx.AsyncClient, enroll: Any, db: Sessions
    ) -> None:
        enrolled: Enrolled = await enroll()
        token = await challenge(api, enrolled)
        async with db() as session, session.begin():
            user = await session.get(User, enrolled.user.id)
            assert user is not None
            user.is_active = False

        response = await second_step(api, token, enrolled.next_code())

        assert_problem(response, 401, "invalid_mfa_token")
        failures = await audit_events(db, "auth.mfa.failed", about=enrolled.user.id)
        assert [event.reason for event in failures] == ["stale_token"]

    async def test_a_locked_account_is_refused_before_the_code_is_judged(
        self, api: httpx.AsyncClient, enroll: Any, auth_settings: AuthSettings
    ) -> None:
        enrolled: Enrolled = await enroll()
        pending = await challenge(api, enrolled)
        wrong = enrolled.code(10)
        for _ in range(auth_settings.lockout_max_failures):
            await second_step(api, await challenge(api, enrolled), wrong)

        response = await second_step(api, pending, enrolled.next_code())

        body = assert_problem(response, 429, "account_locked")
        assert int(response.headers["retry-after"]) > 0
        assert body["status"] == 429

    async def test_a_secret_sealed_under_another_key_refuses_codes_not_recovery_codes(
        self, api: httpx.AsyncClient, enroll: Any, db: Sessions
    ) -> None:
        enrolled: Enrolled = await enroll()
        # As after AIXIATE_SECRET_KEY changed: the stored secret no longer opens.
        other = SecretBox("another-secret-key-of-32-characters!", TOTP_BOX_PURPOSE)
        async with db() as session, session.begin():
            row = (
                await session.exec(
                    select(TotpCredential).where(col(TotpCredential.user_id) == enrolled.user.id)
                )
            ).one()
            row.secret = other.seal(enrolled.secret.encode())

        code = await second_step(api, await challenge(api, enrolled), enrolled.next_code())
        recovered = await second_step(
            api, await challenge(api, enrolled), enrolled.recovery_codes[0]
        )

        assert_problem(code, 401, "invalid_mfa_code")
        assert recovered.status_code == 200, recovered.text

    async def test_the_oauth2_password_grant_answers_mfa_required(
        self, api: httpx.AsyncClient, enroll: Any
    ) -> None:
        enrolled: Enrolled = await enroll()
        form = {"grant_type": "password", "username": enrolled.user.email}

        right = await api.post(TOKEN, data={**form, "password": PASSWORD})
        wrong = await api.post(TOKEN, data={**form, "password": WRONG_PASSWORD})

        assert_problem(right, 403, "mfa_required")
        # Whether an account has MFA is told only to whoever knows its password.
        assert_problem(wrong, 401, "invalid_credentials")


class TestRecoveryCodes:
    async def test_a_recovery_code_logs_in_once_and_the_owner_is_told(
        self, api: httpx.AsyncClient, enroll: Any, mailbox: Mailbox, db: Sessions
    ) -> None:
        enrolled: Enrolled = await enroll()
        code = enrolled.recovery_codes[3]

        response = await second_step(api, await challenge(api, enrolled), code)
        again = await second_step(api, await challenge(api, enrolled), code)

        assert response.status_code == 200, response.text
        assert jwt_part(response.json()["access_token"], 1)["amr"] == ["pwd", "mfa"]
        assert_problem(again, 401, "invalid_mfa_code")
        mail = await mailbox.last(enrolled.user.email, "mfa_recovery_code_used")
        assert "9 of your codes are left" in mail.text
        [used] = await audit_events(db, "auth.mfa.recovery_code_used", about=enrolled.user.id)
        assert used.data == {"remaining": 9}
        status = await api.get(STATUS, headers=bearer(response.json()["access_token"]))
        assert status.json()["recovery_codes_remaining"] == 9

    async def test_case_spaces_and_dashes_do_not_matter(
        self, api: httpx.AsyncClient, enroll: Any
    ) -> None:
        enrolled: Enrolled = await enroll()
        typed = " " + enrolled.recovery_codes[0].replace("-", " ").upper() + " "

        response = await second_step(api, await challenge(api, enrolled), typed)

        assert response.status_code == 200, response.text

    async def test_a_new_set_voids_the_old_one(
        self, api: httpx.AsyncClient, enroll: Any, mailbox: Mailbox
    ) -> None:
        enrolled: Enrolled = await enroll()

        response = await api.post(
            CODES, json={"password": PASSWORD}, headers=bearer(enrolled.access_token)
        )

        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        fresh = response.json()["recovery_codes"]
        assert len(fresh) == 10
        assert not set(fresh) & set(enrolled.recovery_codes)
        old = await second_step(api, await challenge(api, enrolled), enrolled.recovery_codes[0])
        assert_problem(old, 401, "invalid_mfa_code")
        new = await second_step(api, await challenge(api, enrolled), fresh[0])
        assert new.status_code == 200, new.text
        await mailbox.last(enrolled.user.email, "mfa_recovery_codes_regenerated")

    async def test_a_new_set_needs_the_password(
        self, api: httpx.AsyncClient, enroll: Any, db: Sessions
    ) -> None:
        enrolled: Enrolled = await enroll()

        response = await api.post(
            CODES, json={"password": WRONG_PASSWORD}, headers=bearer(enrolled.access_token)
        )

        assert_problem(response, 403, "invalid_password")
        still = await second_step(api, await challenge(api, enrolled), enrolled.recovery_codes[0])
        assert still.status_code == 200
        [failed] = await audit_events(db, "auth.mfa.failed", about=enrolled.user.id)
        assert (failed.reason, failed.data) == ("bad_password", {"action": "recovery_codes"})

    async def test_without_mfa_there_are_no_codes_to_renew(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        token = (await password_login(api, user.email))["access_token"]

        response = await api.post(CODES, json={"password": PASSWORD}, headers=bearer(token))

        assert_problem(response, 409, "mfa_not_enabled")


class TestAttemptsAndLockout:
    async def test_wrong_codes_lock_the_account_as_wrong_passwords_do(
        self, api: httpx.AsyncClient, enroll: Any, auth_settings: AuthSettings
    ) -> None:
        enrolled: Enrolled = await enroll()
        wrong = enrolled.code(10)
        answers = []
        for _ in range(auth_settings.lockout_max_failures):
            answers.append(await second_step(api, await challenge(api, enrolled), wrong))

        for answer in answers[:-1]:
            assert_problem(answer, 401, "invalid_mfa_code")
        assert_problem(answers[-1], 429, "account_locked")
        # Locked: the password step refuses too, and so does a right code.
        locked = await api.post(LOGIN, json={"email": enrolled.user.email, "password": PASSWORD})
        assert_problem(locked, 429, "account_locked")

    async def test_a_right_password_does_not_wipe_the_failed_codes(
        self, api: httpx.AsyncClient, enroll: Any, auth_settings: AuthSettings
    ) -> None:
        enrolled: Enrolled = await enroll()
        wrong = enrolled.code(10)
        for _ in range(auth_settings.lockout_max_failures - 1):
            # A fresh password step each time: it must not reset the count.
            answer = await second_step(api, await challenge(api, enrolled), wrong)
            assert_problem(answer, 401, "invalid_mfa_code")

        last = await second_step(api, await challenge(api, enrolled), wrong)

        assert_problem(last, 429, "account_locked")

    async def test_a_completed_login_clears_the_failures(
        self, api: httpx.AsyncClient, enroll: Any, auth_settings: AuthSettings
    ) -> None:
        enrolled: Enrolled = await enroll()
        wrong = enrolled.code(10)
        for _ in range(auth_settings.lockout_max_failures - 1):
            await second_step(api, await challenge(api, enrolled), wrong)
        assert (
            await second_step(api, await challenge(api, enrolled), enrolled.next_code())
        ).status_code == 200

        after = await second_step(api, await challenge(api, enrolled), wrong)

        assert_problem(after, 401, "invalid_mfa_code")

    async def test_five_wrong_codes_end_the_mfa_token(
        self, app_with: AuthAppVariant, make_user: UserFactory, clock: FakeClock
    ) -> None:
        async with serve(app_with(lockout_max_failures=50)) as api:
            user = await make_user()
            token = (await password_login(api, user.email))["access_token"]
            secret, _ = await setup_and_confirm(api, token, clock)
            enrolled = Enrolled(user, token, secret, [], clock)
            mfa_token = await challenge(api, enrolled)
            wrong = enrolled.code(10)
            for _ in range(5):
                assert_problem(await second_step(api, mfa_token, wrong), 401, "invalid_mfa_code")

            right = await second_step(api, mfa_token, enrolled.next_code())

            assert_problem(right, 401, "invalid_mfa_token")

    async def test_a_concurrent_burst_of_guesses_gets_five_at_most(
        self,
        app_with: AuthAppVariant,
        make_user: UserFactory,
        clock: FakeClock,
        db: Sessions,
    ) -> None:
        async with serve(app_with(lockout_max_failures=50)) as api:
            user = await make_user()
            token = (await password_login(api, user.email))["access_token"]
            secret, _ = await setup_and_confirm(api, token, clock)
            mfa_token = await challenge(api, Enrolled(user, token, secret, [], clock))
            guesses = [f"{n:06d}" for n in range(30)]

            answers = await asyncio.gather(*(second_step(api, mfa_token, g) for g in guesses))

        judged = [a for a in answers if a.json()["code"] == "invalid_mfa_code"]
        assert all(a.status_code == 401 for a in answers)
        assert len(judged) <= 5
        failures = await audit_events(db, "auth.mfa.failed", about=user.id)
        assert sum(1 for event in failures if event.reason == "bad_code") <= 5

    async def test_two_concurrent_right_codes_make_one_session(
        self, api: httpx.AsyncClient, enroll: Any
    ) -> None:
        enrolled: Enrolled = await enroll()
        token = await challenge(api, enrolled)
        code = enrolled.next_code()

        answers = await asyncio.gather(second_step(api, token, code), second_step(api, token, code))

        assert sorted(a.status_code for a in answers) == [200, 401]


class TestTurningOff:
    async def test_the_password_turns_mfa_off_and_voids_the_codes(
        self, api: httpx.AsyncClient, enroll: Any, db: Sessions, mailbox: Mailbox
    ) -> None:
        enrolled: Enrolled = await enroll()

        response = await api.request(
            "DELETE", DISABLE, json={"password": PASSWORD}, headers=bearer(enrolled.access_token)
        )

        assert response.status_code == 204, response.text
        assert await codes_of(db, enrolled.user) == []
        assert await row_of(db, enrolled.user) is None
        pair = await password_login(api, enrolled.user.email)
        assert jwt_part(pair["access_token"], 1)["amr"] == ["pwd"]
        assert (await api.get(ME, headers=bearer(pair["access_token"]))).json()[
            "mfa_enabled"
        ] is False
        await mailbox.last(enrolled.user.email, "mfa_disabled")
        assert len(await audit_events(db, "auth.mfa.disabled", about=enrolled.user.id)) == 1

    async def test_a_wrong_password_is_refused_and_counts_toward_the_lockout(
        self, api: httpx.AsyncClient, enroll: Any, auth_settings: AuthSettings
    ) -> None:
        enrolled: Enrolled = await enroll()
        answers = [
            await api.request(
                "DELETE",
                DISABLE,
                json={"password": WRONG_PASSWORD},
                headers=bearer(enrolled.access_token),
            )
            for _ in range(auth_settings.lockout_max_failures)
        ]

        assert_problem(answers[0], 403, "invalid_password")
        assert_problem(answers[-1], 429, "account_locked")
        status = await api.get(STATUS, headers=bearer(enrolled.access_token))
        assert status.json()["enabled"] is True

    async def test_off_already_is_a_conflict(
        self, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        token = (await password_login(api, user.email))["access_token"]

        response = await api.request(
            "DELETE", DISABLE, json={"password": PASSWORD}, headers=bearer(token)
        )

        assert_problem(response, 409, "mfa_not_enabled")

    async def test_a_password_reset_leaves_mfa_on(
        self, api: httpx.AsyncClient, enroll: Any, mailbox: Mailbox
    ) -> None:
        enrolled: Enrolled = await enroll()
        await api.post(f"{API}/auth/password/forgot", json={"email": enrolled.user.email})
        token = (await mailbox.last(enrolled.user.email, "password_reset")).token
        new_password = "a-brand-new-passphrase-42"
        reset = await api.post(
            f"{API}/auth/password/reset", json={"token": token, "new_password": new_password}
        )
        assert reset.status_code == 204, reset.text

        body = await password_login(api, enrolled.user.email, new_password)

        assert body["mfa_required"] is True


class TestAdminReset:
    async def test_an_admin_turns_a_users_mfa_off(
        self,
        api: httpx.AsyncClient,
        enroll: Any,
        make_user: UserFactory,
        db: Sessions,
        mailbox: Mailbox,
    ) -> None:
        enrolled: Enrolled = await enroll()
        admin = await make_user(roles=["admin"])
        admin_token = (await password_login(api, admin.email))["access_token"]

        response = await api.delete(f"{USERS}/{enrolled.user.id}/mfa", headers=bearer(admin_token))

        assert response.status_code == 204, response.text
        assert await codes_of(db, enrolled.user) == []
        assert "access_token" in await password_login(api, enrolled.user.email)
        await mailbox.last(enrolled.user.email, "mfa_reset")
        [event] = await audit_events(db, "admin.user.mfa.reset", about=enrolled.user.id)
        assert (event.actor_id, event.data) == (admin.id, {"was_enabled": True})

    async def test_only_admins_and_only_existing_users(
        self, api: httpx.AsyncClient, enroll: Any, make_user: UserFactory
    ) -> None:
        enrolled: Enrolled = await enroll()
        admin = await make_user(roles=["admin"])
        admin_token = (await password_login(api, admin.email))["access_token"]

        member = await api.delete(
            f"{USERS}/{enrolled.user.id}/mfa", headers=bearer(enrolled.access_token)
        )
        missing = await api.delete(f"{USERS}/{uuid4()}/mfa", headers=bearer(admin_token))

        assert_problem(member, 403, "forbidden")
        assert_problem(missing, 404, "not_found")


class TestRequiredRoles:
    @pytest.fixture
    async def strict(
        self, make_auth_app: AuthAppFactory, app_settings: Settings, auth_settings: AuthSettings
    ) -> AsyncIterator[httpx.AsyncClient]:
        settings = app_settings.model_copy(update={"mfa_required_roles": frozenset({"admin"})})
        async with serve(make_auth_app(settings, auth_settings)) as http:
            yield http

    async def test_an_admin_must_enroll_and_sign_in_with_a_code(
        self, strict: httpx.AsyncClient, make_user: UserFactory, clock: FakeClock
    ) -> None:
        admin = await make_user(roles=["admin"])
        token = (await password_login(strict, admin.email))["access_token"]

        refused = await strict.delete(f"{USERS}/{uuid4()}/mfa", headers=bearer(token))
        assert_problem(refused, 403, "mfa_required")
        # The MFA routes stay open to them.
        secret, _ = await setup_and_confirm(strict, token, clock)
        # Enrolling does not upgrade the session that enrolled: sign in again.
        assert_problem(
            await strict.delete(f"{USERS}/{uuid4()}/mfa", headers=bearer(token)),
            403,
            "mfa_required",
        )
        enrolled = Enrolled(admin, token, secret, [], clock)
        mfa_token = await challenge(strict, enrolled)
        pair = (await second_step(strict, mfa_token, enrolled.next_code())).json()

        admitted = await strict.delete(
            f"{USERS}/{uuid4()}/mfa", headers=bearer(pair["access_token"])
        )

        assert_problem(admitted, 404, "not_found")

    async def test_members_are_not_affected(
        self, strict: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        token = (await password_login(strict, user.email))["access_token"]

        assert (await strict.get(ME, headers=bearer(token))).status_code == 200


class TestVerifier:
    """Another service verifying our tokens sees the amr and can require a second factor."""

    async def test_require_mfa(
        self, api: httpx.AsyncClient, enroll: Any, make_user: UserFactory
    ) -> None:
        verifier = JWKSTokenVerifier(JWKS_URL, client=api)
        shop = FastAPI()
        install_error_handlers(shop)

        @shop.post("/payouts")
        async def payout(
            principal: Annotated[Principal, Depends(verifier.require_mfa)],
        ) -> dict[str, list[str]]:
            return {"amr": sorted(principal.amr)}

        @shop.delete("/orders")
        async def delete_orders(
            principal: Annotated[Principal, Depends(verifier.require("admin", mfa=True))],
        ) -> dict[str, bool]:
            return {"ok": True}

        enrolled: Enrolled = await enroll(roles=["admin"])
        with_mfa = (
            await second_step(api, await challenge(api, enrolled), enrolled.next_code())
        ).json()
        plain = await password_login(api, (await make_user(roles=["admin"])).email)

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=shop), base_url="http://shop.test"
        ) as http:
            admitted = await http.post("/payouts", headers=bearer(with_mfa["access_token"]))
            refused = await http.post("/payouts", headers=bearer(plain["access_token"]))
            admin_ok = await http.delete("/orders", headers=bearer(with_mfa["access_token"]))
            admin_refused = await http.delete("/orders", headers=bearer(plain["access_token"]))

        assert admitted.status_code == 200, admitted.text
        assert admitted.json() == {"amr": ["mfa", "otp", "pwd"]}
        assert (refused.status_code, refused.json()["code"]) == (403, "mfa_required")
        assert admin_ok.status_code == 200
        assert (admin_refused.status_code, admin_refused.json()["code"]) == (403, "mfa_required")


class TestPrimitives:
    def test_matching_step_compares_every_step_of_the_window(self) -> None:
        secret = mfa_module.new_secret()
        now = 1_800_000_000.0
        step = int(now) // 30

        assert mfa_module.matching_step(secret, pyotp.TOTP(secret).at(now), now) == step
        assert mfa_module.matching_step(secret, pyotp.TOTP(secret).at(now + 30), now) == step + 1
        assert mfa_module.matching_step(secret, pyotp.TOTP(secret).at(now - 30), now) == step - 1
        assert mfa_module.matching_step(secret, pyotp.TOTP(secret).at(now + 60), now) is None

    def test_recovery_codes_are_high_entropy_and_unambiguous(self) -> None:
        codes = mfa_module.new_recovery_codes()

        assert len(codes) == 10
        assert all(RECOVERY_CODE.fullmatch(code) for code in codes)
        assert not any(set(code) & set("01ilo") for code in codes)
