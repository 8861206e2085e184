"""Social login against real providers on loopback: an OpenID Connect provider and
GitHub's OAuth 2 (``aixiate_auth.testing_provider``), which the service reaches over
HTTP with authlib's client. The browser's part (following redirects) is played by the
test: the API runs in-process, the providers in threads of their own.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import httpx
import pytest
from aixiate_auth import oauth as oauth_module
from aixiate_auth.models import OAuthIdentity
from aixiate_auth.oauth import ProviderSettings, RedirectAllowList
from aixiate_auth.settings import AuthSettings
from aixiate_auth.testing import AuthAppFactory, UserFactory, jwt_part
from aixiate_auth.testing_provider import (
    FakeGitHub,
    FakeOIDCProvider,
    GitHubUser,
    ProviderUser,
    approve,
)
from aixiate_core.settings import Settings
from aixiate_core.testing import FakeClock, Sessions, assert_problem, bearer, serve
from aixiate_core.testing.mail import Mailbox
from aixiate_users.models import User
from aixiate_users.testing import PASSWORD, WRONG_PASSWORD, audit_events
from pydantic import SecretStr, ValidationError
from sqlmodel import col, select

API = "/api/v1"
OAUTH = f"{API}/auth/oauth"
FRONT = "https://app.example.com/auth"
RETURN = f"{FRONT}/done"
ME = f"{API}/users/me"
IDENTITIES = f"{API}/users/me/identities"
FLOW_COOKIE = "__Host-aixiate_oauth"


@pytest.fixture
def oidc() -> Iterator[FakeOIDCProvider]:
    with FakeOIDCProvider() as provider:
        yield provider


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as provider:
        yield provider


def oauth_settings(oidc: FakeOIDCProvider, github: FakeGitHub, **overrides: Any) -> AuthSettings:
    providers = {
        "acme": ProviderSettings(
            issuer=oidc.issuer,
            client_id=oidc.client_id,
            client_secret=SecretStr(oidc.client_secret),
            display_name="Acme ID",
        ),
        "github": ProviderSettings(
            client_id=github.client_id,
            client_secret=SecretStr(github.client_secret),
            authorize_url=github.authorize_url,
            token_url=github.token_url,
            api_url=github.api_url,
        ),
    }
    return AuthSettings(
        _env_file=None, oauth_providers=providers, oauth_redirect_urls=(FRONT,), **overrides
    )


@pytest.fixture
async def api(
    make_auth_app: AuthAppFactory,
    app_settings: Settings,
    oidc: FakeOIDCProvider,
    github: FakeGitHub,
) -> AsyncIterator[httpx.AsyncClient]:
    settings = app_settings.model_copy(update={"api_url": "http://aixiate.test"})
    async with serve(make_auth_app(settings, oauth_settings(oidc, github))) as http:
        yield http


@dataclass
class Landing:
    """Where the browser ends up on the front end, and what the URL carries."""

    url: str

    @property
    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.url).query).items()}


@dataclass
class Started:
    """A flow as the browser holds it: where to go, and the flow cookie it was given."""

    authorize_url: str
    cookie: str


def flow_cookie_of(response: httpx.Response) -> str:
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if FLOW_COOKIE in jar:
            morsel = jar[FLOW_COOKIE]
            assert morsel["httponly"]
            assert morsel["secure"]
            assert morsel["samesite"].lower() == "lax"
            return morsel.value
    raise AssertionError("no flow cookie was set")


async def start(api: httpx.AsyncClient, provider: str, redirect_uri: str = RETURN) -> Started:
    """The provider's authorization URL, as the API's 302 gives it, and the flow cookie."""
    response = await api.get(f"{OAUTH}/{provider}/authorize", params={"redirect_uri": redirect_uri})
    assert response.status_code == 302, response.text
    return Started(response.headers["location"], flow_cookie_of(response))


async def at_provider(started: Started | str) -> str:
    """The user approves at the provider, which sends the browser back: the callback URL."""
    url = started.authorize_url if isinstance(started, Started) else started
    return await approve(url)


async def back_at_api(
    api: httpx.AsyncClient, callback_url: str, cookie: str | None
) -> httpx.Response:
    """The browser arrives at the callback, with the flow cookie when it has one (the
    test client speaks plain http, where clients do not send Secure cookies by themselves)."""
    parts = urlsplit(callback_url)
    assert parts.netloc == "aixiate.test", callback_url
    headers = {"Cookie": f"{FLOW_COOKIE}={cookie}"} if cookie else {}
    return await api.get(f"{parts.path}?{parts.query}", headers=headers)


async def browser_flow(
    api: httpx.AsyncClient, provider: str = "acme", redirect_uri: str = RETURN
) -> Landing:
    started = await start(api, provider, redirect_uri)
    response = await back_at_api(api, await at_provider(started), started.cookie)
    assert response.status_code == 302, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    return Landing(response.headers["location"])


async def exchange(api: httpx.AsyncClient, code: str) -> httpx.Response:
    return await api.post(f"{OAUTH}/exchange", json={"code": code})


async def signed_in(api: httpx.AsyncClient, provider: str = "acme") -> dict[str, Any]:
    landing = await browser_flow(api, provider)
    response = await exchange(api, landing.params["code"])
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


async def identities_of(db: Sessions, user_id: Any) -> list[OAuthIdentity]:
    async with db() as session:
        statement = select(OAuthIdentity).where(col(OAuthIdentity.user_id) == user_id)
        return list((await session.exec(statement)).all())


class TestSignIn:
    async def test_a_new_user_signs_in_with_an_oidc_provider(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider, db: Sessions
    ) -> None:
        oidc.next_user = ProviderUser(subject="248289761001", email="Ada@Example.com", name="Ada")

        landing = await browser_flow(api)

        assert landing.url.startswith(RETURN + "?code=")
        assert set(landing.params) == {"code"}
        response = await exchange(api, landing.params["code"])
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        pair = response.json()
        assert jwt_part(pair["access_token"], 1)["amr"] == ["fed"]
        me = (await api.get(ME, headers=bearer(pair["access_token"]))).json()
        assert me["email"] == "ada@example.com"
        assert me["is_verified"] is True
        assert me["full_name"] == "Ada"
        async with db() as session:
            user = await session.get(User, UUID(me["id"]))
        assert user is not None
        assert user.password_hash is None
        [identity] = await identities_of(db, user.id)
        assert (identity.provider, identity.subject) == ("acme", "248289761001")
        assert len(await audit_events(db, "auth.oauth.account_created", about=user.id)) == 1

    async def test_the_authorize_request_uses_pkce_s256_state_and_nonce(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider
    ) -> None:
        url = (await start(api, "acme")).authorize_url

        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert url.startswith(f"{oidc.url}/authorize?")
        assert query["code_challenge_method"] == "S256"
        assert len(query["code_challenge"]) == 43
        assert len(query["state"]) >= 43
        assert len(query["nonce"]) >= 43
        assert query["redirect_uri"] == "http://aixiate.test/api/v1/auth/oauth/acme/callback"
        assert set(query["scope"].split()) == {"openid", "email", "profile"}

    async def test_the_same_identity_signs_in_to_the_same_account(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider
    ) -> None:
        user = ProviderUser.random()
        oidc.next_user = user
        first = await signed_in(api)
        oidc.next_user = ProviderUser(
            subject=user.subject, email="changed@example.com", name=user.name
        )

        second = await signed_in(api)

        me_first = (await api.get(ME, headers=bearer(first["access_token"]))).json()
        me_second = (await api.get(ME, headers=bearer(second["access_token"]))).json()
        assert me_first["id"] == me_second["id"]

    async def test_an_unverified_provider_address_must_be_verified_first(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider, mailbox: Mailbox
    ) -> None:
        oidc.next_user = ProviderUser(
            subject="7", email="unverified@example.com", email_verified=False
        )

        landing = await browser_flow(api)

        assert landing.params == {"error": "email_not_verified"}
        await mailbox.last("unverified@example.com", "verify_email")

    async def test_github_signs_in_with_its_verified_primary_address(
        self, api: httpx.AsyncClient, github: FakeGitHub
    ) -> None:
        github.next_user = GitHubUser(
            id=583231,
            login="octocat",
            name="The Octocat",
            emails=[("old@example.com", False, True), ("octocat@example.com", True, True)],
        )

        pair = await signed_in(api, "github")

        me = (await api.get(ME, headers=bearer(pair["access_token"]))).json()
        assert me["email"] == "octocat@example.com"
        assert me["is_verified"] is True
        identities = (await api.get(IDENTITIES, headers=bearer(pair["access_token"]))).json()
        assert [(i["provider"], i["subject"]) for i in identities] == [("github", "583231")]

    async def test_github_with_an_unverified_primary_is_not_trusted(
        self, api: httpx.AsyncClient, github: FakeGitHub
    ) -> None:
        github.next_user = GitHubUser(
            id=99, login="x", name=None, emails=[("x-unverified@example.com", True, False)]
        )

        landing = await browser_flow(api, "github")

        assert landing.params == {"error": "email_not_verified"}

    async def test_an_account_made_by_a_provider_can_get_a_password_by_reset(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider, mailbox: Mailbox
    ) -> None:
        oidc.next_user = ProviderUser.random()
        await signed_in(api)
        email = str(oidc.next_user.email)
        await api.post(f"{API}/auth/password/forgot", json={"email": email})
        token = (await mailbox.last(email, "password_reset")).token
        new_password = "provider-made-then-passworded-7"

        reset = await api.post(
            f"{API}/auth/password/reset", json={"token": token, "new_password": new_password}
        )
        login = await api.post(f"{API}/auth/login", json={"email": email, "password": new_password})

        assert reset.status_code == 204, reset.text
        assert login.status_code == 200, login.text
        assert jwt_part(login.json()["access_token"], 1)["amr"] == ["pwd"]

    async def test_providers_are_listed_for_the_buttons(self, api: httpx.AsyncClient) -> None:
        response = await api.get(f"{OAUTH}/providers")

        assert response.json() == [
            {"name": "acme", "display_name": "Acme ID"},
            {"name": "github", "display_name": "GitHub"},
        ]

    async def test_an_account_with_mfa_gets_the_second_step(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider, db: Sessions
    ) -> None:
        oidc.next_user = ProviderUser.random()
        pair = await signed_in(api)
        me = (await api.get(ME, headers=bearer(pair["access_token"]))).json()
        async with db() as session, session.begin():
            user = await session.get(User, UUID(me["id"]))
            assert user is not None
            user.mfa_enabled = True
        oidc.next_user = ProviderUser(
            subject=oidc_subject_of(await identities_of(db, user.id)), email=user.email
        )

        landing = await browser_flow(api)
        response = await exchange(api, landing.params["code"])

        assert response.status_code == 200
        assert response.json()["mfa_required"] is True

    async def test_cookie_transport_works_for_the_exchange(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider
    ) -> None:
        oidc.next_user = ProviderUser.random()
        landing = await browser_flow(api)

        response = await api.post(
            f"{OAUTH}/exchange?transport=cookie", json={"code": landing.params["code"]}
        )

        assert response.status_code == 200, response.text
        assert response.json()["refresh_token"] is None
        assert any(
            h.startswith("__Host-aixiate_refresh=") for h in response.headers.get_list("set-cookie")
        )


def oidc_subject_of(identities: list[OAuthIdentity]) -> str:
    [identity] = identities
    return identity.subject


class TestProviders:
    async def test_microsofts_multi_tenant_issuer_is_checked_per_token(
        self, make_auth_app: AuthAppFactory, app_settings: Settings, github: FakeGitHub
    ) -> None:
        with FakeOIDCProvider(tenant="9188040d-6c67-4c5b-b112-36a304b66dad") as microsoft:
            settings = app_settings.model_copy(update={"api_url": "http://aixiate.test"})
            app = make_auth_app(settings, oauth_settings(microsoft, github))
            async with serve(app) as api:
                microsoft.next_user = ProviderUser.random()
                pair = await signed_in(api)
                microsoft.next_user = ProviderUser.random()
                microsoft.tamper_next(tid="00000000-0000-0000-0000-000000000000")
                refused = await browser_flow(api)

        assert jwt_part(pair["access_token"], 1)["amr"] == ["fed"]
        assert refused.params == {"error": "provider_error"}

    async def test_rotated_provider_keys_are_fetched_again_at_most_once_a_minute(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        clock = FakeClock()
        monkeypatch.setattr(oauth_module, "time", clock)
        oidc.next_user = ProviderUser.random()
        await signed_in(api)
        oidc.rotate_key(keep_old=False)
        fetches = len(oidc.calls_to("/jwks"))

        too_soon = await browser_flow(api)
        clock.advance(61)
        later = await browser_flow(api)

        assert too_soon.params == {"error": "provider_error"}
        assert set(later.params) == {"code"}
        assert len(oidc.calls_to("/jwks")) == fetches + 1

    async def test_an_unreachable_provider_is_a_503_before_the_browser_leaves(
        self, make_auth_app: AuthAppFactory, app_settings: Settings, github: FakeGitHub
    ) -> None:
        with FakeOIDCProvider() as gone:
            settings = oauth_settings(gone, github)
        app = make_auth_app(app_settings, settings)  # the provider has stopped

        async with serve(app) as api:
            response = await api.get(f"{OAUTH}/acme/authorize", params={"redirect_uri": RETURN})

        assert_problem(response, 503, "service_unavailable")
        assert int(response.headers["retry-after"]) > 0

    async def test_oversized_parameters_are_validation_errors(self, api: httpx.AsyncClient) -> None:
        long_url = RETURN + "/" + "a" * 2100
        authorize = await api.get(f"{OAUTH}/acme/authorize", params={"redirect_uri": long_url})
        callback = await api.get(
            f"{OAUTH}/acme/callback", params={"code": "c" * 3000, "state": "s"}
        )
        exchange_ = await api.post(f"{OAUTH}/exchange", json={"code": "x" * 300})

        assert_problem(authorize, 422, "validation_error")
        assert_problem(callback, 422, "validation_error")
        assert_problem(exchange_, 422, "validation_error")


class TestRegistrationModes:
    @pytest.mark.parametrize(
        "rules",
        [{"registration": "invite"}, {"registration_email_domains": "corp.example.net"}],
        ids=["invite_only", "other_domain"],
    )
    async def test_a_new_account_through_a_provider_follows_the_rules(
        self,
        make_auth_app: AuthAppFactory,
        app_settings: Settings,
        oidc: FakeOIDCProvider,
        github: FakeGitHub,
        rules: dict[str, str],
    ) -> None:
        settings = app_settings.model_copy(update={"api_url": "http://aixiate.test"})
        app = make_auth_app(settings, oauth_settings(oidc, github, **rules))
        oidc.next_user = ProviderUser.random()

        async with serve(app) as api:
            landing = await browser_flow(api)

        assert landing.params == {"error": "registration_closed"}

    async def test_existing_accounts_still_sign_in_when_registration_is_closed(
        self,
        make_auth_app: AuthAppFactory,
        app_settings: Settings,
        oidc: FakeOIDCProvider,
        github: FakeGitHub,
    ) -> None:
        settings = app_settings.model_copy(update={"api_url": "http://aixiate.test"})
        known = ProviderUser.random()
        oidc.next_user = known
        async with serve(make_auth_app(settings, oauth_settings(oidc, github))) as api:
            await signed_in(api)
        closed = make_auth_app(settings, oauth_settings(oidc, github, registration="closed"))
        oidc.next_user = known

        async with serve(closed) as api:
            assert "access_token" in await signed_in(api)


class TestAttacks:
    async def test_a_replayed_exchange_code_gets_nothing(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider
    ) -> None:
        oidc.next_user = ProviderUser.random()
        landing = await browser_flow(api)
        assert (await exchange(api, landing.params["code"])).status_code == 200

        replay = await exchange(api, landing.params["code"])

        assert_problem(replay, 400, "invalid_exchange_code")

    async def test_concurrent_exchanges_of_one_code_make_one_session(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider
    ) -> None:
        oidc.next_user = ProviderUser.random()
        code = (await browser_flow(api)).params["code"]

        answers = await asyncio.gather(*(exchange(api, code) for _ in range(5)))

        assert sorted(a.status_code for a in answers) == [200, 400, 400, 400, 400]

    async def test_a_replayed_state_is_refused(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider
    ) -> None:
        oidc.next_user = ProviderUser.random()
        started = await start(api, "acme")
        callback = await at_provider(started)
        assert (await back_at_api(api, callback, started.cookie)).status_code == 302

        replay = await back_at_api(api, callback, started.cookie)

        assert_problem(replay, 400, "invalid_state")

    @pytest.mark.parametrize("state", [None, "forged-state-value", ""])
    async def test_a_missing_or_forged_state_is_refused(
        self, api: httpx.AsyncClient, state: str | None
    ) -> None:
        params = {"code": "whatever"} | ({"state": state} if state is not None else {})

        response = await api.get(f"{OAUTH}/acme/callback", params=params)

        assert_problem(response, 400, "invalid_state")

    async def test_a_callback_finished_in_another_browser_is_refused(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider, db: Sessions
    ) -> None:
        # Login CSRF: the attacker starts a flow, signs in at the provider as themselves,
        # and gets the victim's browser to open the callback URL.
        oidc.next_user = ProviderUser.random()
        attacker = await start(api, "acme")
        callback = await at_provider(attacker)
        victim = await start(api, "acme")  # the victim's browser has a flow cookie of its own

        without = await back_at_api(api, callback, None)
        with_other = await back_at_api(api, callback, victim.cookie)

        assert_problem(without, 400, "invalid_state")
        assert_problem(with_other, 400, "invalid_state")
        reasons = [e.reason for e in await audit_events(db, "auth.oauth.callback.failed")]
        assert "other_browser" in reasons

    async def test_a_link_flow_cannot_be_finished_by_someone_else(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider, make_user: UserFactory, db: Sessions
    ) -> None:
        user = await make_user()
        token = (
            await api.post(f"{API}/auth/login", json={"email": user.email, "password": PASSWORD})
        ).json()["access_token"]
        started = await api.post(
            f"{IDENTITIES}/acme", json={"redirect_uri": RETURN}, headers=bearer(token)
        )
        oidc.next_user = ProviderUser.random()  # the attacker's provider account
        callback = await at_provider(started.json()["authorize_url"])

        response = await back_at_api(api, callback, None)

        assert_problem(response, 400, "invalid_state")
        assert await identities_of(db, user.id) == []

    async def test_a_state_of_another_provider_is_refused(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider
    ) -> None:
        started = await start(api, "acme")
        tampered = (await at_provider(started)).replace("/acme/callback", "/github/callback")

        response = await back_at_api(api, tampered, started.cookie)

        assert_problem(response, 400, "invalid_state")

    async def test_a_tampered_state_is_refused(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider
    ) -> None:
        started = await start(api, "acme")
        parts = urlsplit(await at_provider(started))
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        query["state"] = query["state"][:-2] + ("AA" if not query["state"].endswith("AA") else "BB")

        response = await api.get(
            parts.path, params=query, headers={"Cookie": f"{FLOW_COOKIE}={started.cookie}"}
        )

        assert_problem(response, 400, "invalid_state")

    @pytest.mark.parametrize(
        "tamper",
        [
            {"aud": "someone-else"},
            {"iss": "https://evil.example"},
            {"nonce": "not-the-nonce"},
            {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
        ],
        ids=["wrong_aud", "wrong_iss", "wrong_nonce", "expired"],
    )
    async def test_an_id_token_with_wrong_claims_gets_no_tokens(
        self,
        api: httpx.AsyncClient,
        oidc: FakeOIDCProvider,
        db: Sessions,
        tamper: dict[str, Any],
    ) -> None:
        oidc.next_user = ProviderUser.random()
        oidc.tamper_next(**tamper)

        landing = await browser_flow(api)

        assert landing.params == {"error": "provider_error"}
        failures = await audit_events(db, "auth.oauth.callback.failed")
        assert failures[-1].reason is not None
        assert failures[-1].reason.startswith("id_token")

    async def test_an_id_token_without_a_nonce_gets_no_tokens(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider
    ) -> None:
        oidc.next_user = ProviderUser.random()
        oidc.omit_next("nonce")

        assert (await browser_flow(api)).params == {"error": "provider_error"}

    async def test_a_foreign_signature_gets_no_tokens(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider
    ) -> None:
        oidc.next_user = ProviderUser.random()
        oidc.sign_next_with_foreign_key()

        assert (await browser_flow(api)).params == {"error": "provider_error"}

    async def test_a_denial_at_the_provider_comes_back_as_access_denied(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider
    ) -> None:
        oidc.deny_next()

        assert (await browser_flow(api)).params == {"error": "access_denied"}

    async def test_a_failing_token_endpoint_is_a_provider_error(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider
    ) -> None:
        oidc.fail_token_endpoint_next(status=500)

        assert (await browser_flow(api)).params == {"error": "provider_error"}

    @pytest.mark.parametrize(
        "url",
        [
            "https://app.example.com.evil.test/auth/done",
            "https://evil.test/auth/done",
            "http://app.example.com/auth/done",
            "https://app.example.com:8443/auth/done",
            "https://app.example.com/authx",
            "https://app.example.com/",
            "https://app.example.com/auth/../admin",
            "https://app.example.com/auth/%2e%2e/admin",
            "https://user@app.example.com/auth/done",
            "https://app.example.com\\@evil.test/auth",
            "//evil.test/auth",
            "javascript:alert(1)",
            "https://app.example.com/auth#fragment",
        ],
    )
    async def test_look_alike_redirect_urls_are_refused(
        self, api: httpx.AsyncClient, url: str
    ) -> None:
        response = await api.get(f"{OAUTH}/acme/authorize", params={"redirect_uri": url})

        assert_problem(response, 400, "invalid_redirect_uri")

    async def test_an_unknown_provider_is_404(self, api: httpx.AsyncClient) -> None:
        response = await api.get(f"{OAUTH}/nope/authorize", params={"redirect_uri": RETURN})

        assert_problem(response, 404, "not_found")


class TestLinking:
    async def test_an_existing_address_is_never_linked_silently(
        self,
        api: httpx.AsyncClient,
        oidc: FakeOIDCProvider,
        make_user: UserFactory,
        db: Sessions,
        mailbox: Mailbox,
    ) -> None:
        user = await make_user()
        oidc.next_user = ProviderUser(subject="linked-1", email=user.email)

        landing = await browser_flow(api)
        refused = await exchange(api, landing.params["code"])

        body = assert_problem(refused, 409, "link_required")
        assert body["provider"] == "acme"
        assert await identities_of(db, user.id) == []
        wrong = await api.post(
            f"{OAUTH}/link", json={"link_token": body["link_token"], "password": WRONG_PASSWORD}
        )
        assert_problem(wrong, 401, "invalid_credentials")
        assert await identities_of(db, user.id) == []
        linked = await api.post(
            f"{OAUTH}/link", json={"link_token": body["link_token"], "password": PASSWORD}
        )
        assert linked.status_code == 200, linked.text
        assert jwt_part(linked.json()["access_token"], 1)["amr"] == ["pwd", "fed"]
        [identity] = await identities_of(db, user.id)
        assert identity.subject == "linked-1"
        await mailbox.last(user.email, "identity_linked")
        again = await api.post(
            f"{OAUTH}/link", json={"link_token": body["link_token"], "password": PASSWORD}
        )
        assert_problem(again, 400, "invalid_link_token")
        # From now on the provider signs in to that account directly.
        oidc.next_user = ProviderUser(subject="linked-1", email=user.email)
        assert "access_token" in await signed_in(api)

    async def test_wrong_link_passwords_count_toward_the_lockout(
        self,
        api: httpx.AsyncClient,
        oidc: FakeOIDCProvider,
        make_user: UserFactory,
        auth_settings: AuthSettings,
    ) -> None:
        user = await make_user()
        oidc.next_user = ProviderUser(subject="lock-1", email=user.email)
        body = (await exchange(api, (await browser_flow(api)).params["code"])).json()
        answers = [
            await api.post(
                f"{OAUTH}/link",
                json={"link_token": body["link_token"], "password": WRONG_PASSWORD},
            )
            for _ in range(auth_settings.lockout_max_failures)
        ]

        assert_problem(answers[-1], 429, "account_locked")
        login = await api.post(
            f"{API}/auth/login", json={"email": user.email, "password": PASSWORD}
        )
        assert_problem(login, 429, "account_locked")

    async def test_a_signed_in_user_links_and_unlinks_a_provider(
        self,
        api: httpx.AsyncClient,
        oidc: FakeOIDCProvider,
        make_user: UserFactory,
        mailbox: Mailbox,
    ) -> None:
        user = await make_user()
        token = (
            await api.post(f"{API}/auth/login", json={"email": user.email, "password": PASSWORD})
        ).json()["access_token"]
        oidc.next_user = ProviderUser(subject="mine-1", email="other-address@example.com")

        started = await api.post(
            f"{IDENTITIES}/acme", json={"redirect_uri": RETURN}, headers=bearer(token)
        )
        assert started.status_code == 200, started.text
        callback = await at_provider(started.json()["authorize_url"])
        back = await back_at_api(api, callback, flow_cookie_of(started))
        landing = Landing(back.headers["location"])

        assert landing.params == {"linked": "acme"}
        listed = (await api.get(IDENTITIES, headers=bearer(token))).json()
        assert [(i["provider"], i["subject"]) for i in listed] == [("acme", "mine-1")]
        await mailbox.last(user.email, "identity_linked")
        again = await api.post(
            f"{IDENTITIES}/acme", json={"redirect_uri": RETURN}, headers=bearer(token)
        )
        assert_problem(again, 409, "identity_taken")
        removed = await api.delete(f"{IDENTITIES}/acme", headers=bearer(token))
        assert removed.status_code == 204
        assert (await api.get(IDENTITIES, headers=bearer(token))).json() == []
        await mailbox.last(user.email, "identity_unlinked")
        assert_problem(
            await api.delete(f"{IDENTITIES}/acme", headers=bearer(token)), 404, "not_found"
        )

    async def test_another_accounts_identity_cannot_be_linked(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider, make_user: UserFactory
    ) -> None:
        taken = ProviderUser.random()
        oidc.next_user = taken
        await signed_in(api)
        user = await make_user()
        token = (
            await api.post(f"{API}/auth/login", json={"email": user.email, "password": PASSWORD})
        ).json()["access_token"]
        oidc.next_user = taken

        started = await api.post(
            f"{IDENTITIES}/acme", json={"redirect_uri": RETURN}, headers=bearer(token)
        )
        callback = await at_provider(started.json()["authorize_url"])
        back = await back_at_api(api, callback, flow_cookie_of(started))
        landing = Landing(back.headers["location"])

        assert landing.params == {"error": "identity_taken"}

    async def test_unknown_and_forged_link_tokens_are_refused(self, api: httpx.AsyncClient) -> None:
        response = await api.post(
            f"{OAUTH}/link", json={"link_token": "x" * 43, "password": PASSWORD}
        )

        assert_problem(response, 400, "invalid_link_token")

    async def test_a_deactivated_account_gets_no_tokens_and_keeps_its_link_token(
        self,
        api: httpx.AsyncClient,
        oidc: FakeOIDCProvider,
        make_user: UserFactory,
        db: Sessions,
    ) -> None:
        user = await make_user()
        oidc.next_user = ProviderUser(subject=f"inactive-{user.id}", email=user.email)
        body = (await exchange(api, (await browser_flow(api)).params["code"])).json()
        async with db() as session, session.begin():
            stored = await session.get(User, user.id)
            assert stored is not None
            stored.is_active = False

        refused = await api.post(
            f"{OAUTH}/link", json={"link_token": body["link_token"], "password": PASSWORD}
        )

        assert_problem(refused, 403, "account_inactive")
        assert await identities_of(db, user.id) == []
        async with db() as session, session.begin():
            stored = await session.get(User, user.id)
            assert stored is not None
            stored.is_active = True
        linked = await api.post(
            f"{OAUTH}/link", json={"link_token": body["link_token"], "password": PASSWORD}
        )
        assert linked.status_code == 200, linked.text

    async def test_a_deactivated_account_cannot_sign_in_through_its_provider(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider, db: Sessions
    ) -> None:
        known = ProviderUser.random()
        oidc.next_user = known
        me = (await api.get(ME, headers=bearer((await signed_in(api))["access_token"]))).json()
        async with db() as session, session.begin():
            stored = await session.get(User, UUID(me["id"]))
            assert stored is not None
            stored.is_active = False
        oidc.next_user = known

        response = await exchange(api, (await browser_flow(api)).params["code"])

        assert_problem(response, 403, "account_inactive")

    async def test_the_last_way_in_cannot_be_removed(
        self, api: httpx.AsyncClient, oidc: FakeOIDCProvider
    ) -> None:
        oidc.next_user = ProviderUser.random()
        pair = await signed_in(api)

        response = await api.delete(f"{IDENTITIES}/acme", headers=bearer(pair["access_token"]))

        assert_problem(response, 409, "last_credential")

    async def test_linking_needs_a_session(self, api: httpx.AsyncClient) -> None:
        response = await api.post(f"{IDENTITIES}/acme", json={"redirect_uri": RETURN})

        assert_problem(response, 401, "not_authenticated")


class TestSettings:
    def test_presets_need_only_client_credentials(self) -> None:
        settings = AuthSettings(
            _env_file=None,
            oauth_providers={
                name: {"client_id": "id", "client_secret": "secret"}
                for name in ("google", "github", "microsoft")
            },
        )

        providers = settings.providers()

        assert providers["google"].issuer == "https://accounts.google.com"
        assert providers["github"].kind == "github"
        assert providers["microsoft"].issuer == "https://login.microsoftonline.com/common/v2.0"

    def test_a_generic_provider_needs_an_issuer(self) -> None:
        with pytest.raises(ValidationError, match="needs an issuer"):
            AuthSettings(
                _env_file=None,
                oauth_providers={"acme": {"client_id": "id", "client_secret": "secret"}},
            )

    def test_redirect_entries_must_be_urls(self) -> None:
        with pytest.raises(ValidationError):
            AuthSettings(_env_file=None, oauth_redirect_urls="not a url")

    def test_an_entry_without_a_path_allows_the_whole_origin_and_only_it(self) -> None:
        allowed = RedirectAllowList(["http://localhost:3000"])

        assert allowed.permits("http://localhost:3000/")
        assert allowed.permits("http://localhost:3000/callback?x=1")
        assert not allowed.permits("http://localhost:3001/")
        assert not allowed.permits("http://localhost.evil.test:3000/")
