"""Access tokens on a protected route: only our own, unexpired, live ones pass.

Every refusal of a presented token is a 401 ``invalid_token`` problem with
``WWW-Authenticate: Bearer error="invalid_token"``; a missing token is 401
``not_authenticated`` with a bare ``Bearer`` challenge.
"""

import base64
import hashlib
import hmac
import json
import time
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from aixiate_auth.access_tokens import encode_access_token
from aixiate_auth.settings import AuthSettings
from aixiate_auth.state import AuthState
from aixiate_auth.testing import Login, UserFactory, jwt_part
from aixiate_core.errors import PROBLEM_CONTENT_TYPE
from aixiate_core.testing import bearer
from aixiate_users.models import User
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import ECKey

ME = "/api/v1/users/me"
LOGOUT = "/api/v1/auth/logout"
INVALID_TOKEN = 'Bearer error="invalid_token"'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def sign(claims: dict[str, Any], key: ECKey, kid: str, **header: Any) -> str:
    return jwt.encode({"alg": "ES256", "kid": kid, **header}, claims, key, algorithms=["ES256"])


def foreign_key() -> ECKey:
    return ECKey.generate_key("P-256", private=True)


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["code"] == "invalid_token"
    assert response.headers["www-authenticate"] == INVALID_TOKEN
    assert "email" not in response.text


class Caller:
    """A logged-in user: a real token, its claims, and the auth_state's signing key, from
    which the tests forge their variants."""

    def __init__(self, user: User, pair: dict[str, Any], auth_state: AuthState) -> None:
        self.user = user
        self.access_token: str = pair["access_token"]
        self.refresh_token: str = pair["refresh_token"]
        self.claims = jwt_part(self.access_token, 1)
        self.runtime = auth_state

    @property
    def session_id(self) -> UUID:
        return UUID(self.claims["sid"])

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        loaded = self.runtime.keyring.signing_key()
        return sign(claims, loaded.key, loaded.kid, **header)

    def issued_at(self, now: int, auth_settings: AuthSettings) -> str:
        """A token of the caller's session, signed with our key, as if issued at ``now``."""
        loaded = self.runtime.keyring.signing_key()
        token, _ = encode_access_token(
            auth_settings,
            kid=loaded.kid,
            key=loaded.key,
            user_id=self.user.id,
            session_id=self.session_id,
            roles=[],
            amr=["pwd"],
            now=now,
        )
        return token

    def with_claims(self, **changes: Any) -> dict[str, Any]:
        return {**self.claims, **changes}

    def without(self, name: str) -> dict[str, Any]:
        return {k: v for k, v in self.claims.items() if k != name}


@pytest.fixture
async def caller(make_user: UserFactory, login: Login, auth_state: AuthState) -> Caller:
    user = await make_user()
    return Caller(user, await login(user.email), auth_state)


class TestValidToken:
    async def test_a_token_we_signed_passes(self, api: httpx.AsyncClient, caller: Caller) -> None:
        response = await api.get(ME, headers=bearer(caller.access_token))

        assert response.status_code == 200, response.text
        assert response.json()["id"] == str(caller.user.id)

    async def test_the_forging_helper_makes_tokens_that_pass_unchanged(
        self, api: httpx.AsyncClient, caller: Caller
    ) -> None:
        # Guards every test below: each refusal is due to the one thing it changes.
        response = await api.get(ME, headers=bearer(caller.sign(caller.with_claims())))

        assert response.status_code == 200, response.text

    async def test_scheme_is_case_insensitive(self, api: httpx.AsyncClient, caller: Caller) -> None:
        response = await api.get(ME, headers={"Authorization": f"bearer {caller.access_token}"})

        assert response.status_code == 200


class TestMissingToken:
    async def test_no_header(self, api: httpx.AsyncClient) -> None:
        response = await api.get(ME)

        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert response.json()["code"] == "not_authenticated"
        assert response.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize("parameter", ["access_token", "token", "jwt"])
    async def test_token_in_the_query_string_is_not_read(
        self, api: httpx.AsyncClient, caller: Caller, parameter: str
    ) -> None:
        response = await api.get(ME, params={parameter: caller.access_token})

        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"
        assert response.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize(
        ("header", "value"),
        [("Cookie", "access_token={token}"), ("Authorization", "Basic {token}")],
        ids=["token_in_a_cookie_is_not_read", "other_schemes_are_not_a_bearer_token"],
    )
    async def test_only_a_bearer_header_carries_the_token(
        self, api: httpx.AsyncClient, caller: Caller, header: str, value: str
    ) -> None:
        response = await api.get(ME, headers={header: value.format(token=caller.access_token)})

        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"


class TestForgedTokens:
    async def test_alg_none(self, api: httpx.AsyncClient, caller: Caller) -> None:
        kid = jwt_part(caller.access_token, 0)["kid"]
        for alg in ("none", "None", "NONE"):
            token = f"{b64json({'alg': alg, 'typ': 'JWT', 'kid': kid})}.{b64json(caller.claims)}."

            assert_invalid_token(await api.get(ME, headers=bearer(token)))

    @pytest.mark.parametrize("secret_form", ["pem", "der", "jwk"])
    async def test_hs256_keyed_with_our_public_key(
        self, api: httpx.AsyncClient, caller: Caller, secret_form: str
    ) -> None:
        # Algorithm confusion: a verifier that let the header pick the algorithm would
        # use the (public) verification key as an HMAC secret.
        loaded = caller.runtime.keyring.signing_key()
        public = loaded.key.as_dict(private=False)
        point = loaded.key.public_key
        secret = {
            "pem": point.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "der": point.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "jwk": json.dumps(public).encode(),
        }[secret_form]
        signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': loaded.kid})}."
        signing_input += b64json(caller.claims)
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()

        response = await api.get(ME, headers=bearer(f"{signing_input}.{b64(mac)}"))

        assert_invalid_token(response)

    async def test_claims_changed_under_the_original_signature(
        self, api: httpx.AsyncClient, caller: Caller
    ) -> None:
        # The genuine token first, so that it is in the auth_state's memo of verified
        # tokens: a variant of it must still get the full check.
        assert (await api.get(ME, headers=bearer(caller.access_token))).status_code == 200
        header, _, signature = caller.access_token.split(".")
        for changes in (
            {"roles": ["admin"]},
            {"sub": str(uuid4())},
            {"exp": caller.claims["exp"] + 86400},
        ):
            payload = b64json(caller.with_claims(**changes))

            response = await api.get(ME, headers=bearer(f"{header}.{payload}.{signature}"))

            assert_invalid_token(response)

    async def test_signature_of_another_token(
        self, api: httpx.AsyncClient, caller: Caller, login: Login
    ) -> None:
        other = (await login(caller.user.email))["access_token"]
        for genuine in (caller.access_token, other):
            assert (await api.get(ME, headers=bearer(genuine))).status_code == 200
        header, payload, _ = caller.access_token.split(".")

        response = await api.get(ME, headers=bearer(f"{header}.{payload}.{other.split('.')[2]}"))

        assert_invalid_token(response)

    async def test_foreign_key_claiming_our_kid(
        self, api: httpx.AsyncClient, caller: Caller
    ) -> None:
        kid = caller.runtime.keyring.signing_key().kid

        token = sign(caller.claims, foreign_key(), kid)

        assert_invalid_token(await api.get(ME, headers=bearer(token)))

    async def test_unknown_kid(self, api: httpx.AsyncClient, caller: Caller) -> None:
        key = foreign_key()

        token = sign(caller.claims, key, key.thumbprint())

        assert_invalid_token(await api.get(ME, headers=bearer(token)))

    async def test_missing_kid(self, api: httpx.AsyncClient, caller: Caller) -> None:
        loaded = caller.runtime.keyring.signing_key()

        token = jwt.encode({"alg": "ES256"}, caller.claims, loaded.key, algorithms=["ES256"])

        assert_invalid_token(await api.get(ME, headers=bearer(token)))

    @pytest.mark.parametrize("where", ["jwk", "jku", "x5u", "jwk-with-our-kid"])
    async def test_header_cannot_supply_the_key(
        self, api: httpx.AsyncClient, caller: Caller, where: str
    ) -> None:
        attacker = foreign_key()
        attacker_jwk = attacker.as_dict(private=False)
        kid = attacker.thumbprint()
        header: dict[str, Any]
        if where == "jwk":
            header = {"jwk": attacker_jwk}
        elif where == "jwk-with-our-kid":
            header = {"jwk": attacker_jwk}
            kid = caller.runtime.keyring.signing_key().kid
        else:
            header = {where: "https://attacker.example/jwks.json"}

        token = sign(caller.claims, attacker, kid, **header)

        assert_invalid_token(await api.get(ME, headers=bearer(token)))

    async def test_a_jku_on_a_genuine_token_changes_nothing(
        self, api: httpx.AsyncClient, caller: Caller
    ) -> None:
        # The reverse: a genuine token with a jku naming an attacker still verifies with
        # our key only, so the added header changes nothing about which key is used.
        token = caller.sign(caller.with_claims(), jku="https://attacker.example/jwks.json")

        response = await api.get(ME, headers=bearer(token))

        assert response.status_code == 200


class TestClaims:
    async def test_expired(
        self, api: httpx.AsyncClient, caller: Caller, auth_settings: AuthSettings
    ) -> None:
        past = int(time.time()) - auth_settings.access_token_ttl_seconds
        past -= auth_settings.jwt_leeway_seconds + 60

        token = caller.issued_at(past, auth_settings)

        assert_invalid_token(await api.get(ME, headers=bearer(token)))

    async def test_expired_within_the_leeway_still_passes(
        self, api: httpx.AsyncClient, caller: Caller, auth_settings: AuthSettings
    ) -> None:
        # Expired 5 s ago with 30 s of tolerated clock skew.
        issued = int(time.time()) - auth_settings.access_token_ttl_seconds - 5

        token = caller.issued_at(issued, auth_settings)

        assert (await api.get(ME, headers=bearer(token))).status_code == 200

    async def test_not_yet_valid(self, api: httpx.AsyncClient, caller: Caller) -> None:
        later = int(time.time()) + 3600
        claims = caller.with_claims(iat=later, nbf=later, exp=later + 900)

        assert_invalid_token(await api.get(ME, headers=bearer(caller.sign(claims))))

    @pytest.mark.parametrize(
        "changes",
        [
            {"iss": "https://evil.example"},
            {"aud": "another-service"},
            {"aud": ["another-service"]},
            {"typ": "refresh"},
            {"typ": "id"},
            {"sub": "not-a-uuid"},
            {"sid": "not-a-uuid"},
            {"roles": "admin"},
            {"roles": [1]},
            {"exp": "tomorrow"},
        ],
        ids=repr,
    )
    async def test_wrong_claim(
        self, api: httpx.AsyncClient, caller: Caller, changes: dict[str, Any]
    ) -> None:
        token = caller.sign(caller.with_claims(**changes))

        assert_invalid_token(await api.get(ME, headers=bearer(token)))

    @pytest.mark.parametrize("claim", ["sid", "jti", "typ", "sub", "iss", "aud", "exp", "iat"])
    async def test_missing_claim(self, api: httpx.AsyncClient, caller: Caller, claim: str) -> None:
        token = caller.sign(caller.without(claim))

        assert_invalid_token(await api.get(ME, headers=bearer(token)))

    async def test_session_that_does_not_exist(
        self, api: httpx.AsyncClient, caller: Caller
    ) -> None:
        token = caller.sign(caller.with_claims(sid=str(uuid4())))

        assert_invalid_token(await api.get(ME, headers=bearer(token)))


class TestNotAnAccessToken:
    async def test_refresh_token_is_not_an_access_token(
        self, api: httpx.AsyncClient, caller: Caller
    ) -> None:
        assert_invalid_token(await api.get(ME, headers=bearer(caller.refresh_token)))

    @pytest.mark.parametrize(
        "garbage",
        [
            "garbage",
            "a.b.c",
            "a.b",
            "...",
            "eyJhbGciOiJFUzI1NiJ9.e30.",
            "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln",
            "x" * 4000,
            "null",
            "{}",
        ],
        ids=[
            "word",
            "three-parts",
            "two-parts",
            "dots",
            "empty-claims",
            "not-json",
            "long",
            "null",
            "braces",
        ],
    )
    async def test_garbage(self, api: httpx.AsyncClient, garbage: str) -> None:
        assert_invalid_token(await api.get(ME, headers=bearer(garbage)))


class TestEndedSessions:
    async def test_token_of_a_logged_out_session(
        self, api: httpx.AsyncClient, caller: Caller
    ) -> None:
        logout = await api.post(LOGOUT, headers=bearer(caller.access_token))
        assert logout.status_code == 204

        assert_invalid_token(await api.get(ME, headers=bearer(caller.access_token)))

    async def test_token_of_a_user_an_admin_deactivated(
        self,
        api: httpx.AsyncClient,
        caller: Caller,
        make_user: UserFactory,
        login: Login,
    ) -> None:
        admin = await make_user(roles=["admin"])
        admin_token = (await login(admin.email))["access_token"]

        patched = await api.patch(
            f"/api/v1/users/{caller.user.id}",
            json={"is_active": False},
            headers=bearer(admin_token),
        )

        assert patched.status_code == 200, patched.text
        assert_invalid_token(await api.get(ME, headers=bearer(caller.access_token)))
        assert (await api.get(ME, headers=bearer(admin_token))).status_code == 200
