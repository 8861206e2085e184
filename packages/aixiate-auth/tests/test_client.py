"""The client face: another service verifying our access tokens from the JWKS alone.

The verifier fetches the JWKS of a running app (in-process) through the client it is
given. Its clock is the module's ``time.monotonic``, replaced here by one the test moves.
"""

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

import httpx
import pytest
from aixiate_auth import client as client_module
from aixiate_auth.client import JWKSTokenVerifier
from aixiate_auth.services import keys
from aixiate_auth.state import AuthState
from aixiate_auth.testing import kid_of
from aixiate_core.crypto import SecretBox
from aixiate_core.db import create_engine, create_sessionmaker
from aixiate_core.errors import (
    PROBLEM_CONTENT_TYPE,
    InvalidToken,
    ServiceUnavailable,
    install_error_handlers,
)
from aixiate_core.security import Principal
from aixiate_core.settings import Settings
from aixiate_core.testing import FakeClock, Sessions, bearer, serve
from aixiate_users.passwords import Passwords
from aixiate_users.testing import PASSWORD, create_user_with_password
from fastapi import Depends, FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey

LOGIN = "/api/v1/auth/login"
LOGOUT = "/api/v1/auth/logout"
JWKS_PATH = "/.well-known/jwks.json"
JWKS_URL = f"http://aixiate.test{JWKS_PATH}"


@dataclass
class Issuer:
    """The running Aixiate app the verifier talks to, and what the test needs of it."""

    http: httpx.AsyncClient
    auth_state: AuthState
    settings: Settings
    users: dict[str, str]
    jwks_fetches: list[httpx.Request]

    async def login(self, who: str) -> str:
        response = await self.http.post(
            LOGIN, json={"email": self.users[who], "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    async def rotate(self) -> None:
        """A new signing key, as ``aixiate keys rotate`` makes it, loaded by the app."""
        engine = create_engine(self.settings)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                await keys.rotate(session, SecretBox(self.settings.secret(), "signing-keys"))
        finally:
            await engine.dispose()
        await self.auth_state.keyring.reload()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(10_000.0)
    monkeypatch.setattr(client_module, "time", fake)
    return fake


@pytest.fixture
async def issuer(
    own_app: FastAPI, own_settings: Settings, own_db: Sessions, passwords: Passwords
) -> AsyncIterator[Issuer]:
    # A database of its own: these tests rotate keys.
    users: dict[str, str] = {}
    async with own_db() as session, session.begin():
        for who, roles in (("member", []), ("admin", ["admin"])):
            user = await create_user_with_password(session, passwords, roles=roles)
            users[who] = user.email
    fetches: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        if request.url.path == JWKS_PATH:
            fetches.append(request)

    async with serve(own_app) as http:
        http.event_hooks["request"].append(record)
        yield Issuer(http, own_app.state.auth, own_settings, users, fetches)


def verifier_for(source: Issuer, **options: Any) -> JWKSTokenVerifier:
    # Not closed by the tests: it borrows the issuer's client, which the fixture closes.
    return JWKSTokenVerifier(JWKS_URL, client=source.http, **options)


def other_service(verifier: JWKSTokenVerifier) -> FastAPI:
    """A small service of someone else's that trusts our tokens."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/orders")
    async def orders(
        principal: Annotated[Principal, Depends(verifier.principal)],
    ) -> dict[str, Any]:
        return {"user_id": str(principal.user_id), "roles": sorted(principal.roles)}

    @app.delete("/orders/{order_id}")
    async def delete_order(
        order_id: int, principal: Annotated[Principal, Depends(verifier.require("admin"))]
    ) -> dict[str, Any]:
        return {"deleted": order_id, "by": str(principal.user_id)}

    return app


@pytest.fixture
async def shop(issuer: Issuer) -> AsyncIterator[httpx.AsyncClient]:
    app = other_service(verifier_for(issuer))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://shop.test"
    ) as http:
        yield http


class TestVerify:
    async def test_valid_token_gives_the_principal(self, issuer: Issuer) -> None:
        token = await issuer.login("admin")
        verifier = verifier_for(issuer)

        principal = await verifier.verify(token)

        me = (await issuer.http.get("/api/v1/users/me", headers=bearer(token))).json()
        assert principal.user_id == UUID(me["id"])
        assert principal.roles == frozenset({"admin"})
        assert principal.has_role("admin")

    @pytest.mark.parametrize(
        "options", [{"audience": "billing-api"}, {"issuer": "someone-else"}], ids=["aud", "iss"]
    )
    async def test_token_for_another_audience_or_issuer(
        self, issuer: Issuer, options: dict[str, str]
    ) -> None:
        token = await issuer.login("member")
        verifier = verifier_for(issuer, **options)

        with pytest.raises(InvalidToken) as raised:
            await verifier.verify(token)

        assert raised.value.status_code == 401

    async def test_tampered_token(self, issuer: Issuer) -> None:
        token = await issuer.login("member")
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["roles"] = ["admin"]
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

        with pytest.raises(InvalidToken):
            await verifier_for(issuer).verify(f"{header}.{forged}.{signature}")

    async def test_alg_none(self, issuer: Issuer) -> None:
        token = await issuer.login("member")
        header = base64.urlsafe_b64encode(
            json.dumps({"alg": "none", "kid": kid_of(token)}).encode()
        ).rstrip(b"=")

        with pytest.raises(InvalidToken):
            await verifier_for(issuer).verify(f"{header.decode()}.{token.split('.')[1]}.")

    async def test_revoked_session_still_passes_here_until_it_expires(self, issuer: Issuer) -> None:
        # Documented limit of verifying from the JWKS alone; the issuer itself refuses.
        token = await issuer.login("member")
        assert (await issuer.http.post(LOGOUT, headers=bearer(token))).status_code == 204

        principal = await verifier_for(issuer).verify(token)

        assert principal.roles == frozenset()
        me = await issuer.http.get("/api/v1/users/me", headers=bearer(token))
        assert me.status_code == 401

    async def test_keys_fetched_once_for_many_tokens(
        self, issuer: Issuer, clock: FakeClock
    ) -> None:
        verifier = verifier_for(issuer)
        tokens = [await issuer.login("member") for _ in range(5)]

        for token in tokens:
            await verifier.verify(token)

        assert len(issuer.jwks_fetches) == 1

    async def test_keys_fetched_again_when_the_cache_expires(
        self, issuer: Issuer, clock: FakeClock
    ) -> None:
        verifier = verifier_for(issuer, cache_seconds=300)
        token = await issuer.login("member")
        await verifier.verify(token)

        clock.advance(301)
        await verifier.verify(token)

        assert len(issuer.jwks_fetches) == 2


class TestUnknownKid:
    async def test_rotation_is_picked_up_at_most_once_per_interval(
        self, issuer: Issuer, clock: FakeClock
    ) -> None:
        verifier = verifier_for(issuer, cache_seconds=3600, min_refetch_seconds=30)
        await verifier.verify(await issuer.login("member"))
        assert len(issuer.jwks_fetches) == 1
        await issuer.rotate()
        rotated = await issuer.login("member")

        # Too soon after the last fetch: refused without fetching.
        clock.advance(10)
        with pytest.raises(InvalidToken):
            await verifier.verify(rotated)
        assert len(issuer.jwks_fetches) == 1

        # Once the interval has passed, the unknown kid triggers one fetch.
        clock.advance(25)
        assert (await verifier.verify(rotated)).roles == frozenset()
        assert len(issuer.jwks_fetches) == 2

    async def test_flood_of_forged_kids_fetches_once_per_interval(
        self, issuer: Issuer, clock: FakeClock
    ) -> None:
        verifier = verifier_for(issuer, cache_seconds=3600, min_refetch_seconds=30)
        genuine = await issuer.login("member")
        await verifier.verify(genuine)
        genuine_claims = genuine.split(".")[1]

        def forged() -> str:
            key = ECKey.generate_key("P-256", private=True)
            claims = json.loads(
                base64.urlsafe_b64decode(genuine_claims + "=" * (-len(genuine_claims) % 4))
            )
            return jwt.encode(
                {"alg": "ES256", "kid": key.thumbprint()}, claims, key, algorithms=["ES256"]
            )

        clock.advance(31)
        for _ in range(20):
            with pytest.raises(InvalidToken):
                await verifier.verify(forged())
        assert len(issuer.jwks_fetches) == 2

        clock.advance(31)
        for _ in range(20):
            with pytest.raises(InvalidToken):
                await verifier.verify(forged())
        assert len(issuer.jwks_fetches) == 3
        assert (await verifier.verify(genuine)).roles == frozenset()


class TestUnreachableIssuer:
    async def test_first_use_without_keys_is_unavailable(self, issuer: Issuer) -> None:
        verifier = JWKSTokenVerifier(
            "http://aixiate.test/.well-known/missing.json", client=issuer.http
        )

        with pytest.raises(ServiceUnavailable):
            await verifier.verify(await issuer.login("member"))

    async def test_cached_keys_outlive_a_failed_refresh(
        self, issuer: Issuer, clock: FakeClock
    ) -> None:
        verifier = verifier_for(issuer, cache_seconds=300)
        token = await issuer.login("member")
        await verifier.verify(token)
        verifier.jwks_url = "http://aixiate.test/.well-known/missing.json"

        clock.advance(301)

        assert (await verifier.verify(token)).roles == frozenset()


class TestDependencies:
    async def test_principal_dependency(self, issuer: Issuer, shop: httpx.AsyncClient) -> None:
        token = await issuer.login("member")
        me = (await issuer.http.get("/api/v1/users/me", headers=bearer(token))).json()

        response = await shop.get("/orders", headers=bearer(token))

        assert response.status_code == 200, response.text
        assert response.json() == {"user_id": me["id"], "roles": []}

    async def test_missing_token(self, shop: httpx.AsyncClient) -> None:
        response = await shop.get("/orders")

        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert response.json()["code"] == "not_authenticated"
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_bad_token_is_a_401_problem(
        self, issuer: Issuer, shop: httpx.AsyncClient
    ) -> None:
        token = await issuer.login("member")

        response = await shop.get("/orders", headers=bearer(token[:-4] + "AAAA"))

        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert response.json()["code"] == "invalid_token"
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    async def test_role_required(self, issuer: Issuer, shop: httpx.AsyncClient) -> None:
        member = await issuer.login("member")
        admin = await issuer.login("admin")

        refused = await shop.delete("/orders/7", headers=bearer(member))
        allowed = await shop.delete("/orders/7", headers=bearer(admin))

        assert refused.status_code == 403
        assert refused.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert refused.json()["code"] == "forbidden"
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["deleted"] == 7
