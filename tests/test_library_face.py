"""The library face: another service, in this process, trusts tokens of the real
Aixiate service (a separate process) through ``aixiate_auth.client`` and the JWKS alone."""

import base64
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any
from uuid import uuid4

import httpx
import pytest
from aixiate_auth.client import JWKSTokenVerifier
from aixiate_core.errors import PROBLEM_CONTENT_TYPE, install_error_handlers
from aixiate_core.security import Principal
from aixiate_core.testing import bearer
from aixiate_users.testing import PASSWORD
from fastapi import Depends, FastAPI

API = "/api/v1"

type RunCommand = Callable[..., subprocess.CompletedProcess[str]]


def orders_service(verifier: JWKSTokenVerifier) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/orders")
    async def orders(principal: Annotated[Principal, Depends(verifier.principal)]) -> Any:
        return {"user_id": str(principal.user_id), "roles": sorted(principal.roles)}

    @app.delete("/orders/{order_id}")
    async def cancel(
        order_id: int, principal: Annotated[Principal, Depends(verifier.require("admin"))]
    ) -> Any:
        return {"cancelled": order_id, "by": str(principal.user_id)}

    return app


class Aixiate:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def sign_up(self) -> tuple[str, str]:
        """A new account (verification is off for this process): its id and a token."""
        email = f"face-{uuid4().hex[:12]}@example.com"
        registered = await self.client.post(
            f"{API}/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert registered.status_code == 202, registered.text
        token = await self.login(email)
        me = await self.client.get(f"{API}/users/me", headers=bearer(token))
        user_id: str = me.json()["id"]
        return user_id, token

    async def login(self, email: str) -> str:
        response = await self.client.post(
            f"{API}/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


@pytest.fixture
async def deployment(service_url: str) -> AsyncIterator[tuple[Aixiate, httpx.AsyncClient]]:
    """The real service, and the small orders service verifying its tokens."""
    verifier = JWKSTokenVerifier(f"{service_url}/.well-known/jwks.json")
    try:
        async with (
            httpx.AsyncClient(base_url=service_url, timeout=10) as aixiate,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=orders_service(verifier)),
                base_url="http://orders.test",
            ) as orders,
        ):
            yield Aixiate(aixiate), orders
    finally:
        await verifier.aclose()


class TestLibraryFace:
    async def test_token_from_the_service_opens_the_other_service(
        self, deployment: tuple[Aixiate, httpx.AsyncClient]
    ) -> None:
        aixiate, orders = deployment
        user_id, token = await aixiate.sign_up()

        response = await orders.get("/orders", headers=bearer(token))

        assert response.status_code == 200, response.text
        assert response.json() == {"user_id": user_id, "roles": []}

    async def test_tampered_token_is_a_401_problem(
        self, deployment: tuple[Aixiate, httpx.AsyncClient]
    ) -> None:
        aixiate, orders = deployment
        _, token = await aixiate.sign_up()
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["roles"] = ["admin"]
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

        response = await orders.delete(
            "/orders/1", headers=bearer(f"{header}.{forged}.{signature}")
        )

        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert response.json()["code"] == "invalid_token"
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    async def test_missing_token_is_a_401_problem(
        self, deployment: tuple[Aixiate, httpx.AsyncClient]
    ) -> None:
        _, orders = deployment

        response = await orders.get("/orders")

        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"

    async def test_admin_role_is_required_where_asked(
        self,
        deployment: tuple[Aixiate, httpx.AsyncClient],
        aixiate_command: RunCommand,
    ) -> None:
        aixiate, orders = deployment
        _, member_token = await aixiate.sign_up()
        admin_email = f"admin-{uuid4().hex[:12]}@example.com"
        created = aixiate_command(
            "user",
            "create",
            admin_email,
            "--password-stdin",
            "--admin",
            "--verified",
            input=PASSWORD + "\n",
        )
        assert created.returncode == 0, created.stderr
        admin_token = await aixiate.login(admin_email)

        refused = await orders.delete("/orders/7", headers=bearer(member_token))
        allowed = await orders.delete("/orders/7", headers=bearer(admin_token))

        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert refused.json()["code"] == "forbidden"
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["cancelled"] == 7
