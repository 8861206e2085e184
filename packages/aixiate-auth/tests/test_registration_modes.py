"""Registration modes: open, invite-only or closed, and allowed email domains; and the
invitations admins send in any mode."""

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from aixiate_auth.settings import AuthSettings
from aixiate_auth.testing import AuthAppFactory, EmailFactory, UserFactory, jwt_part
from aixiate_core.settings import Settings
from aixiate_core.testing import Sessions, assert_problem, bearer, serve
from aixiate_core.testing.mail import Mailbox
from aixiate_users.testing import PASSWORD, audit_events
from fastapi import FastAPI
from pydantic import ValidationError

API = "/api/v1"
REGISTER = f"{API}/auth/register"
INVITE = f"{API}/users/invite"
ACCEPT = f"{API}/auth/invite/accept"
NEW_PASSWORD = "lantern-orchard-quietly-9"

type Variant = Callable[..., FastAPI]


@pytest.fixture
def variant(
    make_auth_app: AuthAppFactory,
    app_settings: Settings,
    make_auth_settings: Callable[..., AuthSettings],
) -> Variant:
    return lambda **auth: make_auth_app(app_settings, make_auth_settings(**auth))


@pytest.fixture
def unique_email(new_email: EmailFactory) -> EmailFactory:
    return new_email


async def admin_token(api: httpx.AsyncClient, make_user: UserFactory) -> str:
    admin = await make_user(roles=["admin"])
    response = await api.post(
        f"{API}/auth/login", json={"email": admin.email, "password": PASSWORD}
    )
    token: str = response.json()["access_token"]
    return token


class TestModes:
    @pytest.mark.parametrize("mode", ["invite", "closed"])
    async def test_sign_up_is_refused_unless_open(
        self, unique_email: EmailFactory, variant: Variant, mode: str
    ) -> None:
        async with serve(variant(registration=mode)) as api:
            response = await api.post(
                REGISTER, json={"email": unique_email(), "password": PASSWORD}
            )

        assert_problem(response, 403, "registration_closed")

    async def test_domains_limit_who_may_sign_up_and_answer_alike(
        self, unique_email: EmailFactory, variant: Variant, make_user: UserFactory
    ) -> None:
        taken = await make_user(
            email=f"{unique_email('taken').split('@')[0]}@elsewhere.example.org"
        )
        async with serve(
            variant(registration_email_domains="Example.com, @corp.example.net")
        ) as api:
            inside = await api.post(REGISTER, json={"email": unique_email(), "password": PASSWORD})
            corp = await api.post(
                REGISTER, json={"email": "new-person@corp.example.net", "password": PASSWORD}
            )
            outside_new = await api.post(
                REGISTER, json={"email": "someone@elsewhere.example.org", "password": PASSWORD}
            )
            outside_taken = await api.post(
                REGISTER, json={"email": taken.email, "password": PASSWORD}
            )

        assert inside.status_code == 202
        assert corp.status_code == 202
        first = assert_problem(outside_new, 403, "registration_closed")
        second = assert_problem(outside_taken, 403, "registration_closed")
        assert (first["detail"], first["title"]) == (second["detail"], second["title"])

    def test_the_mode_must_be_known(self) -> None:
        with pytest.raises(ValidationError):
            AuthSettings(_env_file=None, registration="sometimes")


class TestInvitations:
    @pytest.fixture
    async def api(self, variant: Variant) -> AsyncIterator[httpx.AsyncClient]:
        async with serve(variant(registration="invite")) as http:
            yield http

    async def test_an_invited_person_sets_a_password_and_is_signed_in(
        self,
        unique_email: EmailFactory,
        api: httpx.AsyncClient,
        make_user: UserFactory,
        mailbox: Mailbox,
        db: Sessions,
    ) -> None:
        token = await admin_token(api, make_user)
        email = unique_email("invited")

        invited = await api.post(
            INVITE,
            json={"email": email, "full_name": "Grace", "roles": ["editor"]},
            headers=bearer(token),
        )

        assert invited.status_code == 202, invited.text
        mail = await mailbox.last(email, "invitation")
        assert "/accept-invite?token=" in mail.text
        accepted = await api.post(ACCEPT, json={"token": mail.token, "password": NEW_PASSWORD})
        assert accepted.status_code == 200, accepted.text
        pair: dict[str, Any] = accepted.json()
        assert jwt_part(pair["access_token"], 1)["roles"] == ["editor"]
        me = (await api.get(f"{API}/users/me", headers=bearer(pair["access_token"]))).json()
        assert (me["email"], me["is_verified"], me["full_name"]) == (email, True, "Grace")
        login = await api.post(f"{API}/auth/login", json={"email": email, "password": NEW_PASSWORD})
        assert login.status_code == 200
        again = await api.post(ACCEPT, json={"token": mail.token, "password": NEW_PASSWORD})
        assert_problem(again, 400, "invalid_or_expired_token")
        assert len(await audit_events(db, "admin.user.invited", about=me["id"])) == 1
        assert len(await audit_events(db, "user.invite.accepted", about=me["id"])) == 1

    async def test_before_accepting_there_is_no_way_in(
        self, unique_email: EmailFactory, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        token = await admin_token(api, make_user)
        email = unique_email("pending")
        await api.post(INVITE, json={"email": email}, headers=bearer(token))

        login = await api.post(f"{API}/auth/login", json={"email": email, "password": ""})
        guess = await api.post(f"{API}/auth/login", json={"email": email, "password": PASSWORD})

        assert_problem(login, 422, "validation_error")
        assert_problem(guess, 401, "invalid_credentials")

    async def test_a_weak_password_keeps_the_invitation_usable(
        self,
        unique_email: EmailFactory,
        api: httpx.AsyncClient,
        make_user: UserFactory,
        mailbox: Mailbox,
    ) -> None:
        token = await admin_token(api, make_user)
        email = unique_email("weak")
        await api.post(INVITE, json={"email": email}, headers=bearer(token))
        link = (await mailbox.last(email, "invitation")).token

        weak = await api.post(ACCEPT, json={"token": link, "password": "password"})
        strong = await api.post(ACCEPT, json={"token": link, "password": NEW_PASSWORD})

        assert_problem(weak, 422, "weak_password")
        assert strong.status_code == 200, strong.text

    async def test_only_admins_invite_and_a_taken_address_is_a_conflict(
        self, unique_email: EmailFactory, api: httpx.AsyncClient, make_user: UserFactory
    ) -> None:
        member = await make_user()
        member_token = (
            await api.post(f"{API}/auth/login", json={"email": member.email, "password": PASSWORD})
        ).json()["access_token"]
        token = await admin_token(api, make_user)

        refused = await api.post(
            INVITE, json={"email": unique_email()}, headers=bearer(member_token)
        )
        taken = await api.post(INVITE, json={"email": member.email}, headers=bearer(token))

        assert_problem(refused, 403, "forbidden")
        assert_problem(taken, 409, "email_taken")

    async def test_a_forged_token_is_refused(self, api: httpx.AsyncClient) -> None:
        response = await api.post(ACCEPT, json={"token": "x" * 43, "password": NEW_PASSWORD})

        assert_problem(response, 400, "invalid_or_expired_token")
