"""The whole journey of one user over HTTP, on the assembled app (``create_app``), with
emails really sent: the outbox dispatcher delivers them to a local fake of Resend, and
the links are read from what the fake received."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import httpx
import pytest
from aixiate_api.app import create_app
from aixiate_auth.settings import AuthSettings
from aixiate_core.settings import Settings
from aixiate_core.testing import FakeResend, bearer, serve
from aixiate_core.testing.mail import link_token
from aixiate_users.testing import PASSWORD, fast_users_settings

NEW_PASSWORD = "quiet-lantern-meadow-77"
API = "/api/v1"
DELIVERY_TIMEOUT_SECONDS = 15


class Inbox:
    """What the fake Resend received, per recipient."""

    def __init__(self, fake: FakeResend) -> None:
        self.fake = fake
        self._read: set[int] = set()  # positions in the fake's delivery list

    async def next_to(self, address: str, subject_starts: str) -> dict[str, Any]:
        """Waits (bounded) for the dispatcher to deliver an unread message like this."""
        async with asyncio.timeout(DELIVERY_TIMEOUT_SECONDS):
            while True:
                for position, email in enumerate(self.fake.emails):
                    if (
                        position not in self._read
                        and email.get("to") == [address]
                        and email["subject"].startswith(subject_starts)
                    ):
                        self._read.add(position)
                        return email
                # Delivery happens in another task and the fake's thread: poll briefly.
                await asyncio.sleep(0.02)

    @staticmethod
    def token_in(email: dict[str, Any], path: str) -> str:
        token = link_token(email["text"], path)
        assert token in email["html"]
        return token


@pytest.fixture
async def journey(
    settings: Settings, fake_resend: FakeResend
) -> AsyncIterator[tuple[httpx.AsyncClient, Inbox]]:
    app_settings = fake_resend.sending(settings).model_copy(
        update={"public_url": "https://app.example.com"}
    )
    fast = fast_users_settings(password_hash_workers=2)
    async with serve(create_app(app_settings, AuthSettings(_env_file=None), fast)) as client:
        yield client, Inbox(fake_resend)


class TestJourney:
    async def test_register_verify_login_change_forget_reset(
        self, journey: tuple[httpx.AsyncClient, Inbox]
    ) -> None:
        client, inbox = journey
        email = f"journey-{uuid4().hex[:12]}@example.com"

        # Sign up; the verification link arrives by email.
        registered = await client.post(
            f"{API}/auth/register",
            json={"email": email, "password": PASSWORD, "full_name": "Ada Lovelace"},
        )
        assert registered.status_code == 202, registered.text
        not_yet = await client.post(
            f"{API}/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert not_yet.status_code == 403
        assert not_yet.json()["code"] == "email_not_verified"
        verification = await inbox.next_to(email, "Confirm your email address")
        assert "https://app.example.com/verify-email?token=" in verification["text"]
        verified = await client.post(
            f"{API}/auth/verify-email",
            json={"token": inbox.token_in(verification, "verify-email")},
        )
        assert verified.status_code == 200, verified.text
        assert verified.json()["is_verified"] is True

        # Log in and look at the account.
        login = await client.post(f"{API}/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        pair = login.json()
        me = await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 200
        assert me.json()["email"] == email
        assert me.json()["full_name"] == "Ada Lovelace"

        # Change the password: the old one stops working, the owner is told.
        changed = await client.post(
            f"{API}/auth/password/change",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(pair["access_token"]),
        )
        assert changed.status_code == 204, changed.text
        changed_notice = await inbox.next_to(email, "Your Aixiate password was changed")
        assert NEW_PASSWORD not in changed_notice["text"]
        refused = await client.post(
            f"{API}/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert refused.status_code == 401
        assert refused.json()["code"] == "invalid_credentials"

        # Forget it; reset it with the link from the email.
        forgot = await client.post(f"{API}/auth/password/forgot", json={"email": email})
        assert forgot.status_code == 202
        reset_mail = await inbox.next_to(email, "Reset your Aixiate password")
        final_password = "amber-kestrel-orchard-19"
        reset = await client.post(
            f"{API}/auth/password/reset",
            json={
                "token": inbox.token_in(reset_mail, "reset-password"),
                "new_password": final_password,
            },
        )
        assert reset.status_code == 204, reset.text
        await inbox.next_to(email, "Your Aixiate password was changed")

        # Every earlier session is over; the new password opens a new one.
        me_after = await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
        assert me_after.status_code == 401
        for old in (PASSWORD, NEW_PASSWORD):
            again = await client.post(f"{API}/auth/login", json={"email": email, "password": old})
            assert again.status_code == 401
        final = await client.post(
            f"{API}/auth/login", json={"email": email, "password": final_password}
        )
        assert final.status_code == 200, final.text
        me_final = await client.get(f"{API}/users/me", headers=bearer(final.json()["access_token"]))
        assert me_final.status_code == 200
        assert me_final.json()["id"] == me.json()["id"]
