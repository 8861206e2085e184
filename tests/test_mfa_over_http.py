"""Two-step verification against the real service over HTTP, with codes computed as an
authenticator app computes them (``pyotp``, on the wall clock, from the ``otpauth://``
URI the service hands out); and on two processes sharing PostgreSQL and Redis, a login
begun on one finishes on the other, and a code one accepted the other refuses.

Run with ``-s`` to see the exchanges (codes, tokens and secrets masked).
"""

import json
import time
from typing import Any
from uuid import uuid4

import httpx
import pyotp
import pytest
from aixiate_auth.testing import jwt_part
from aixiate_core.testing import bearer, postgres_server_url, redis_server_url
from aixiate_users.testing import PASSWORD

API = "/api/v1"
_MASKED_IN_REQUESTS = {"password", "mfa_token", "code"}
_MASKED_IN_ANSWERS = {"access_token", "refresh_token", "mfa_token", "secret", "otpauth_uri"}


def _masked(text: bytes, masked: set[str]) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return "(form)" if text else ""
    if isinstance(body, dict):
        for key in masked & body.keys():
            body[key] = "…"
        if "qr_svg" in body:
            body["qr_svg"] = f"<svg …{len(body['qr_svg'])} chars>"
        if "recovery_codes" in body:
            body["recovery_codes"] = [f"{len(body['recovery_codes'])} codes"]
    return json.dumps(body)


async def _show(response: httpx.Response) -> None:
    await response.aread()
    request = response.request
    print(f"> {request.method} {request.url.path} {_masked(request.content, _MASKED_IN_REQUESTS)}")
    print(f"< {response.status_code} {_masked(response.content, _MASKED_IN_ANSWERS)}")


def client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=10, event_hooks={"response": [_show]})


async def signed_up(http: httpx.AsyncClient) -> tuple[str, str]:
    """A new account (the processes do not require verification) and an access token."""
    email = f"mfa-{uuid4().hex[:12]}@example.com"
    registered = await http.post(
        f"{API}/auth/register", json={"email": email, "password": PASSWORD}
    )
    assert registered.status_code == 202, registered.text
    login = await http.post(f"{API}/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return email, login.json()["access_token"]


async def enrolled(http: httpx.AsyncClient, token: str) -> tuple[pyotp.TOTP, list[str]]:
    """Scans the QR code's URI into an "app" and confirms with the code it shows."""
    setup = await http.post(f"{API}/auth/mfa/totp/setup", headers=bearer(token))
    assert setup.status_code == 200, setup.text
    app = pyotp.parse_uri(setup.json()["otpauth_uri"])
    assert isinstance(app, pyotp.TOTP)
    confirm = await http.post(
        f"{API}/auth/mfa/totp/confirm", json={"code": app.now()}, headers=bearer(token)
    )
    assert confirm.status_code == 200, confirm.text
    codes: list[str] = confirm.json()["recovery_codes"]
    return app, codes


def next_code(app: pyotp.TOTP) -> str:
    """The code the app shows in the next 30 seconds: never the one that just confirmed,
    and within the one step of drift the service allows."""
    return app.at(time.time() + 30)


async def mfa_token_of(http: httpx.AsyncClient, email: str) -> str:
    response = await http.post(f"{API}/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mfa_required"] is True
    assert body["mfa_methods"] == ["totp", "recovery_code"]
    assert "access_token" not in body
    token: str = body["mfa_token"]
    return token


async def second_step(http: httpx.AsyncClient, mfa_token: str, code: str) -> httpx.Response:
    return await http.post(f"{API}/auth/login/mfa", json={"mfa_token": mfa_token, "code": code})


class TestOneProcess:
    async def test_enroll_with_an_authenticator_and_sign_in_with_a_code(
        self, service_url: str
    ) -> None:
        async with client(service_url) as http:
            email, token = await signed_up(http)
            app, codes = await enrolled(http, token)
            status = (await http.get(f"{API}/auth/mfa", headers=bearer(token))).json()
            assert status == {
                "enabled": True,
                "methods": ["totp", "recovery_code"],
                "recovery_codes_remaining": 10,
            }
            assert (await http.post(f"{API}/auth/logout", headers=bearer(token))).status_code == 204

            mfa_token = await mfa_token_of(http, email)
            wrong = await second_step(http, mfa_token, app.at(time.time() + 600))
            signed_in = await second_step(http, mfa_token, next_code(app))

            assert wrong.status_code == 401
            assert wrong.json()["code"] == "invalid_mfa_code"
            assert signed_in.status_code == 200, signed_in.text
            pair: dict[str, Any] = signed_in.json()
            assert jwt_part(pair["access_token"], 1)["amr"] == ["pwd", "otp", "mfa"]
            me = await http.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
            assert me.json()["mfa_enabled"] is True

            # A recovery code, then MFA off with the password.
            recovered = await second_step(http, await mfa_token_of(http, email), codes[0])
            assert recovered.status_code == 200, recovered.text
            assert jwt_part(recovered.json()["access_token"], 1)["amr"] == ["pwd", "mfa"]
            off = await http.request(
                "DELETE",
                f"{API}/auth/mfa/totp",
                json={"password": PASSWORD},
                headers=bearer(pair["access_token"]),
            )
            assert off.status_code == 204
            plain = await http.post(
                f"{API}/auth/login", json={"email": email, "password": PASSWORD}
            )
            assert jwt_part(plain.json()["access_token"], 1)["amr"] == ["pwd"]

    async def test_the_oauth2_password_grant_answers_mfa_required(self, service_url: str) -> None:
        async with client(service_url) as http:
            email, token = await signed_up(http)
            await enrolled(http, token)

            response = await http.post(
                f"{API}/auth/token",
                data={"grant_type": "password", "username": email, "password": PASSWORD},
            )

            assert response.status_code == 403
            assert response.json()["code"] == "mfa_required"


@pytest.mark.skipif(
    postgres_server_url() is None or redis_server_url() is None,
    reason="needs AIXIATE_TEST_DATABASE_URL and AIXIATE_TEST_REDIS_URL: two processes",
)
class TestTwoProcesses:
    async def test_a_login_begun_on_one_finishes_on_the_other_once(
        self, two_service_urls: list[str]
    ) -> None:
        async with client(two_service_urls[0]) as a, client(two_service_urls[1]) as b:
            email, token = await signed_up(a)
            app, _ = await enrolled(a, token)
            mfa_token = await mfa_token_of(a, email)
            code = next_code(app)

            finished = await second_step(b, mfa_token, code)
            token_again = await second_step(a, mfa_token, code)
            code_again = await second_step(a, await mfa_token_of(a, email), code)

            assert finished.status_code == 200, finished.text
            assert token_again.json()["code"] == "invalid_mfa_token"
            # The code was accepted on b: a refuses it inside its own time window.
            assert code_again.status_code == 401
            assert code_again.json()["code"] == "invalid_mfa_code"
