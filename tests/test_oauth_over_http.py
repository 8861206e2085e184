"""Social login against the real service process, configured as an operator would
(``AIXIATE_OAUTH_PROVIDERS`` as JSON in the environment), with an OpenID Connect
provider on loopback: the whole browser round trip over HTTP, then linking."""

import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aixiate_auth.testing import flow_cookie, jwt_part
from aixiate_auth.testing_provider import FakeOIDCProvider, ProviderUser, approve
from aixiate_core.testing import bearer
from aixiate_users.testing import PASSWORD

API = "/api/v1"
FRONT = "http://localhost:3000/auth"


@pytest.fixture(scope="module")
def oidc() -> Iterator[FakeOIDCProvider]:
    with FakeOIDCProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
def service_extra_env(oidc: FakeOIDCProvider) -> dict[str, str]:
    providers = {
        "acme": {
            "issuer": oidc.issuer,
            "client_id": oidc.client_id,
            "client_secret": oidc.client_secret,
            "display_name": "Acme",
        }
    }
    return {
        "AIXIATE_OAUTH_PROVIDERS": json.dumps(providers),
        "AIXIATE_OAUTH_REDIRECT_URLS": FRONT,
    }


async def front_end_landing(http: httpx.AsyncClient, authorize: httpx.Response) -> dict[str, str]:
    """Follows the browser's way: to the provider, back to the API, on to the front end."""
    assert authorize.status_code == 302, authorize.text
    callback = await approve(authorize.headers["location"])
    assert callback.startswith(str(http.base_url).rstrip("/") + f"{API}/auth/oauth/acme/callback")
    back = await http.get(callback, headers=flow_cookie(authorize))
    assert back.status_code == 302, back.text
    landing = back.headers["location"]
    assert landing.startswith(FRONT + "/done?")
    return {k: v[0] for k, v in parse_qs(urlsplit(landing).query).items()}


class TestOverHttp:
    async def test_sign_in_then_link_an_existing_account(
        self, service_url: str, oidc: FakeOIDCProvider
    ) -> None:
        async with httpx.AsyncClient(base_url=service_url, timeout=10) as http:
            providers = (await http.get(f"{API}/auth/oauth/providers")).json()
            assert providers == [{"name": "acme", "display_name": "Acme"}]

            oidc.next_user = ProviderUser.random()
            authorize = await http.get(
                f"{API}/auth/oauth/acme/authorize", params={"redirect_uri": f"{FRONT}/done"}
            )
            params = await front_end_landing(http, authorize)
            pair = (await http.post(f"{API}/auth/oauth/exchange", json=params)).json()
            assert jwt_part(pair["access_token"], 1)["amr"] == ["fed"]
            me = await http.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
            assert me.json()["email"] == oidc.next_user.email

            # An account with a password, then the provider says it has the same address.
            email = f"linker-{oidc.next_user.subject[-8:]}@example.com"
            registered = await http.post(
                f"{API}/auth/register", json={"email": email, "password": PASSWORD}
            )
            assert registered.status_code == 202
            oidc.next_user = ProviderUser(subject="over-http-1", email=email)
            authorize = await http.get(
                f"{API}/auth/oauth/acme/authorize", params={"redirect_uri": f"{FRONT}/done"}
            )
            params = await front_end_landing(http, authorize)
            refused = await http.post(f"{API}/auth/oauth/exchange", json=params)
            assert refused.status_code == 409
            assert refused.json()["code"] == "link_required"
            linked = await http.post(
                f"{API}/auth/oauth/link",
                json={"link_token": refused.json()["link_token"], "password": PASSWORD},
            )
            assert linked.status_code == 200, linked.text
            identities = await http.get(
                f"{API}/users/me/identities", headers=bearer(linked.json()["access_token"])
            )
            assert [i["subject"] for i in identities.json()] == ["over-http-1"]
