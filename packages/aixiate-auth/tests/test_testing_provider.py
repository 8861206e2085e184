"""The fake identity providers behave like the real ones, so that social login tests
against them mean something: the flows work, and what a provider refuses is refused."""

import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aixiate_auth.testing_provider import (
    FakeGitHub,
    FakeOIDCProvider,
    GitHubUser,
    ProviderUser,
    pkce_challenge,
)
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

REDIRECT_URI = "https://app.example.com/auth/oauth/fake/callback"


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOIDCProvider]:
    # One per module: generating its RSA key is the slow part.
    with FakeOIDCProvider() as fake:
        yield fake


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def query_of(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


def authorize(
    http: httpx.Client, provider: FakeOIDCProvider, verifier: str, **params: str
) -> dict[str, str]:
    """The query of the redirect back to the service."""
    query = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile",
        "state": "st-" + secrets.token_urlsafe(8),
        "nonce": "n-0S6_WzA2Mj",
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
    } | params
    return query_of(http.get(f"{provider.url}/authorize", params=query))


def exchange(
    http: httpx.Client, provider: FakeOIDCProvider, code: str, verifier: str
) -> httpx.Response:
    return http.post(
        f"{provider.url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=(provider.client_id, provider.client_secret),
    )


def sign_in(http: httpx.Client, provider: FakeOIDCProvider) -> dict[str, Any]:
    verifier = secrets.token_urlsafe(48)
    answer = exchange(http, provider, authorize(http, provider, verifier)["code"], verifier)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def verify(http: httpx.Client, provider: FakeOIDCProvider, id_token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(http.get(f"{provider.url}/jwks").json())
    token = jwt.decode(id_token, keys, algorithms=["RS256"])
    assert token.header["kid"] == provider.kid
    return dict(token.claims)


def test_discovery_document(http: httpx.Client, provider: FakeOIDCProvider) -> None:
    document = http.get(f"{provider.issuer}/.well-known/openid-configuration").json()

    assert document["issuer"] == provider.issuer == provider.url
    assert document["authorization_endpoint"] == f"{provider.issuer}/authorize"
    assert document["token_endpoint"] == f"{provider.issuer}/token"
    assert document["jwks_uri"] == f"{provider.issuer}/jwks"
    assert document["userinfo_endpoint"] == f"{provider.issuer}/userinfo"
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["response_types_supported"] == ["code"]


def test_code_flow_with_pkce(http: httpx.Client, provider: FakeOIDCProvider) -> None:
    user = ProviderUser(subject="1138", email="ada@example.com", name="Ada Lovelace")
    provider.next_user = user
    verifier = secrets.token_urlsafe(48)

    redirect = authorize(http, provider, verifier, state="opaque/state+ä")
    assert redirect["state"] == "opaque/state+ä"
    answer = exchange(http, provider, redirect["code"], verifier)

    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    claims = verify(http, provider, body["id_token"])
    now = time.time()
    assert claims["iss"] == provider.issuer
    assert claims["aud"] == provider.client_id
    assert claims["sub"] == "1138"
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert (claims["email"], claims["email_verified"]) == ("ada@example.com", True)
    assert claims["name"] == "Ada Lovelace"
    assert now - 5 <= claims["iat"] <= now
    assert claims["exp"] == claims["iat"] + 300
    userinfo = http.get(
        f"{provider.url}/userinfo",
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert userinfo.json() == {
        "sub": "1138",
        "email": "ada@example.com",
        "email_verified": True,
        "name": "Ada Lovelace",
    }
    authorized = provider.calls_to("/authorize")[-1]
    assert authorized.params["code_challenge_method"] == "S256"
    assert provider.calls_to("/token")[-1].headers["authorization"].startswith("Basic ")


def test_wrong_verifier_and_reused_code_are_refused(
    http: httpx.Client, provider: FakeOIDCProvider
) -> None:
    verifier = secrets.token_urlsafe(48)
    code = authorize(http, provider, verifier)["code"]
    wrong = exchange(http, provider, code, secrets.token_urlsafe(48))
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")

    code = authorize(http, provider, verifier)["code"]
    assert exchange(http, provider, code, verifier).status_code == 200
    replay = exchange(http, provider, code, verifier)
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")


def test_client_secret_is_checked(http: httpx.Client, provider: FakeOIDCProvider) -> None:
    verifier = secrets.token_urlsafe(48)
    code = authorize(http, provider, verifier)["code"]
    answer = http.post(
        f"{provider.url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
            "client_id": provider.client_id,
            "client_secret": "not-the-secret",
        },
    )
    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_client")


def test_plain_pkce_and_denial(http: httpx.Client, provider: FakeOIDCProvider) -> None:
    plain = http.get(
        f"{provider.url}/authorize",
        params={
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": REDIRECT_URI,
            "code_challenge": "x" * 43,
            "code_challenge_method": "plain",
        },
    )
    assert plain.status_code == 400

    provider.deny_next()
    denied = authorize(http, provider, secrets.token_urlsafe(48), state="s1")
    assert denied == {
        "error": "access_denied",
        "error_description": "The user denied the request",
        "state": "s1",
    }
    assert "code" in authorize(http, provider, secrets.token_urlsafe(48))


def test_tampered_claims_and_omissions(http: httpx.Client, provider: FakeOIDCProvider) -> None:
    provider.tamper_next(aud="someone-else", exp=1)
    provider.omit_next("nonce")
    claims = verify(http, provider, sign_in(http, provider)["id_token"])
    assert (claims["aud"], claims["exp"]) == ("someone-else", 1)
    assert "nonce" not in claims

    again = verify(http, provider, sign_in(http, provider)["id_token"])
    assert again["aud"] == provider.client_id
    assert "nonce" in again


def test_foreign_key_fails_verification(http: httpx.Client, provider: FakeOIDCProvider) -> None:
    provider.sign_next_with_foreign_key()
    with pytest.raises(BadSignatureError):
        verify(http, provider, sign_in(http, provider)["id_token"])
    verify(http, provider, sign_in(http, provider)["id_token"])


def test_key_rotation(http: httpx.Client) -> None:
    with FakeOIDCProvider() as fake:
        old = fake.kid
        new = fake.rotate_key()
        assert fake.kid == new != old
        assert [key["kid"] for key in fake.jwks()["keys"]] == [old, new]
        verify(http, fake, sign_in(http, fake)["id_token"])  # checks the header's kid
        fake.rotate_key(keep_old=False)
        assert [key["kid"] for key in fake.jwks()["keys"]] == [fake.kid]


def test_token_endpoint_failure_leaves_the_code(
    http: httpx.Client, provider: FakeOIDCProvider
) -> None:
    verifier = secrets.token_urlsafe(48)
    code = authorize(http, provider, verifier)["code"]
    provider.fail_token_endpoint_next(status=503)
    assert exchange(http, provider, code, verifier).status_code == 503
    assert exchange(http, provider, code, verifier).status_code == 200


def test_multi_tenant_issuer(http: httpx.Client) -> None:
    with FakeOIDCProvider(tenant="9188040d") as fake:
        document = http.get(f"{fake.issuer}/.well-known/openid-configuration").json()
        assert fake.issuer == f"{fake.url}/common/v2.0"
        assert document["issuer"] == f"{fake.url}/{{tenantid}}/v2.0"
        claims = verify(http, fake, sign_in(http, fake)["id_token"])
        assert (claims["iss"], claims["tid"]) == (f"{fake.url}/9188040d/v2.0", "9188040d")


def test_github_round_trip(http: httpx.Client) -> None:
    with FakeGitHub() as github:
        github.next_user = GitHubUser(
            id=12345,
            login="octocat",
            name="The Octocat",
            emails=[("old@example.com", False, True), ("cat@example.com", True, True)],
        )
        verifier = secrets.token_urlsafe(48)
        redirect = http.get(
            github.authorize_url,
            params={
                "client_id": github.client_id,
                "redirect_uri": REDIRECT_URI,
                "scope": "read:user user:email",
                "state": "gh-state",
                "code_challenge": pkce_challenge(verifier),
                "code_challenge_method": "S256",
            },
        )
        query = query_of(redirect)
        assert query["state"] == "gh-state"
        form = {
            "client_id": github.client_id,
            "client_secret": github.client_secret,
            "code": query["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        }
        accept = {"Accept": "application/json"}
        token = http.post(github.token_url, data=form, headers=accept).json()
        assert token["token_type"] == "bearer"
        assert token["scope"] == "read:user,user:email"
        # GitHub's errors come with 200: a spent code.
        replay = http.post(github.token_url, data=form, headers=accept)
        assert replay.status_code == 200
        assert replay.json()["error"] == "bad_verification_code"

        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        user = http.get(f"{github.api_url}/user", headers=bearer).json()
        assert (user["id"], user["login"], user["name"]) == (12345, "octocat", "The Octocat")
        assert user["email"] is None
        emails = http.get(f"{github.api_url}/user/emails", headers=bearer).json()
        assert [(e["email"], e["primary"], e["verified"]) for e in emails] == [
            ("old@example.com", False, True),
            ("cat@example.com", True, True),
        ]
        unknown = http.get(f"{github.api_url}/user", headers={"Authorization": "Bearer nope"})
        assert unknown.status_code == 401


def test_github_refuses_a_wrong_verifier(http: httpx.Client) -> None:
    with FakeGitHub() as github:
        redirect = http.get(
            github.authorize_url,
            params={
                "client_id": github.client_id,
                "redirect_uri": REDIRECT_URI,
                "code_challenge": pkce_challenge(secrets.token_urlsafe(48)),
                "code_challenge_method": "S256",
            },
        )
        answer = http.post(
            github.token_url,
            data={"code": query_of(redirect)["code"], "code_verifier": "w" * 43},
            auth=(github.client_id, github.client_secret),
        )
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/x-www-form-urlencoded"
        assert parse_qs(answer.text)["error"] == ["bad_verification_code"]
