from collections.abc import AsyncIterator, Callable
from uuid import UUID, uuid4

import httpx
import pytest
from aixiate_core.app import static_state
from aixiate_core.errors import PROBLEM_CONTENT_TYPE, InvalidToken
from aixiate_core.security import (
    AdminPrincipal,
    CurrentPrincipal,
    Principal,
    register_token_url,
    require_role,
)
from aixiate_core.settings import Settings
from aixiate_core.testing import bearer, serve
from fastapi import APIRouter, Depends, FastAPI, Request

type AppFactory = Callable[..., FastAPI]

USER = Principal(user_id=uuid4(), session_id=uuid4(), roles=frozenset())
ADMIN = Principal(user_id=uuid4(), session_id=uuid4(), roles=frozenset({"admin"}))
AUDITOR = Principal(user_id=uuid4(), session_id=uuid4(), roles=frozenset({"auditor"}))
ADMIN_WITH_MFA = Principal(
    user_id=uuid4(), session_id=uuid4(), roles=frozenset({"admin"}), amr=frozenset({"pwd", "mfa"})
)


class FakeResolver:
    """Knows a fixed set of tokens; records what it was asked."""

    def __init__(self) -> None:
        self.tokens = {
            "user-token": USER,
            "admin-token": ADMIN,
            "auditor-token": AUDITOR,
            "mfa-admin-token": ADMIN_WITH_MFA,
        }
        self.seen: list[str] = []

    async def __call__(self, request: Request, token: str) -> Principal:
        self.seen.append(token)
        try:
            return self.tokens[token]
        except KeyError:
            raise InvalidToken() from None


def principal_json(principal: Principal) -> dict[str, str | list[str]]:
    return {"user_id": str(principal.user_id), "roles": sorted(principal.roles)}


def security_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/me")
    async def me(principal: CurrentPrincipal, request: Request) -> dict[str, str | list[str]]:
        assert request.state.principal is principal
        return principal_json(principal)

    @router.get("/admin")
    async def admin(principal: AdminPrincipal) -> dict[str, str | list[str]]:
        return principal_json(principal)

    @router.get("/audit", dependencies=[Depends(require_role("auditor"))])
    async def audit() -> dict[str, bool]:
        return {"ok": True}

    return router


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
async def client(
    make_app: AppFactory, settings: Settings, resolver: FakeResolver
) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(settings, security_routes(), static_state(principal_resolver=resolver))
    async with serve(app) as http:
        yield http


class TestGetPrincipal:
    async def test_without_token_is_401(
        self, client: httpx.AsyncClient, resolver: FakeResolver
    ) -> None:
        response = await client.get("/me")

        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["code"] == "not_authenticated"
        assert resolver.seen == []

    async def test_empty_bearer_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/me", headers={"Authorization": "Bearer "})

        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"

    async def test_other_scheme_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_resolved_principal(
        self, client: httpx.AsyncClient, resolver: FakeResolver
    ) -> None:
        response = await client.get("/me", headers=bearer("user-token"))

        assert response.status_code == 200
        assert response.json() == principal_json(USER)
        assert UUID(response.json()["user_id"]) == USER.user_id
        assert resolver.seen == ["user-token"]

    async def test_rejected_token_is_invalid_token(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/me", headers=bearer("forged"))

        assert response.status_code == 401
        assert response.json()["code"] == "invalid_token"
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    @pytest.mark.parametrize("parameter", ["access_token", "token"])
    async def test_token_in_query_string_is_not_accepted(
        self, client: httpx.AsyncClient, resolver: FakeResolver, parameter: str
    ) -> None:
        response = await client.get("/me", params={parameter: "user-token"})

        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"
        assert resolver.seen == []

    async def test_without_registered_resolver_fails_closed(
        self, make_app: AppFactory, settings: Settings
    ) -> None:
        async with serve(make_app(settings, security_routes())) as client:
            response = await client.get("/me", headers=bearer("user-token"))

        assert response.status_code == 500
        assert response.json()["code"] == "internal_error"


class TestRequireRole:
    async def test_holder_is_admitted(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/admin", headers=bearer("admin-token"))

        assert response.status_code == 200
        assert response.json() == principal_json(ADMIN)

    async def test_missing_role_is_403(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/admin", headers=bearer("user-token"))

        assert response.status_code == 403
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        body = response.json()
        assert body["code"] == "forbidden"
        assert "admin" in body["detail"]

    async def test_other_role_is_403(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/admin", headers=bearer("auditor-token"))

        assert response.status_code == 403

    async def test_custom_role(self, client: httpx.AsyncClient) -> None:
        admitted = await client.get("/audit", headers=bearer("auditor-token"))
        refused = await client.get("/audit", headers=bearer("admin-token"))

        assert admitted.status_code == 200
        assert refused.status_code == 403

    async def test_unauthenticated_is_401_not_403(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/admin")

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"

    def test_dependency_is_named_after_the_role(self) -> None:
        assert require_role("auditor").__name__ == "require_auditor"


class TestMfaRequiredRoles:
    @pytest.fixture
    async def strict(
        self, make_app: AppFactory, settings: Settings, resolver: FakeResolver
    ) -> AsyncIterator[httpx.AsyncClient]:
        strict = settings.model_copy(update={"mfa_required_roles": frozenset({"admin"})})
        app = make_app(strict, security_routes(), static_state(principal_resolver=resolver))
        async with serve(app) as http:
            yield http

    async def test_a_password_only_login_is_refused_with_mfa_required(
        self, strict: httpx.AsyncClient
    ) -> None:
        response = await strict.get("/admin", headers=bearer("admin-token"))

        assert response.status_code == 403
        assert response.json()["code"] == "mfa_required"

    async def test_a_login_with_a_second_factor_is_admitted(
        self, strict: httpx.AsyncClient
    ) -> None:
        response = await strict.get("/admin", headers=bearer("mfa-admin-token"))

        assert response.status_code == 200

    async def test_lacking_the_role_is_still_forbidden_not_mfa_required(
        self, strict: httpx.AsyncClient
    ) -> None:
        response = await strict.get("/admin", headers=bearer("user-token"))

        assert response.json()["code"] == "forbidden"

    async def test_roles_not_listed_need_no_second_factor(self, strict: httpx.AsyncClient) -> None:
        response = await strict.get("/audit", headers=bearer("auditor-token"))

        assert response.status_code == 200

    async def test_without_the_setting_a_password_is_enough(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/admin", headers=bearer("admin-token"))

        assert response.status_code == 200

    def test_the_setting_reads_a_comma_separated_list(self) -> None:
        parsed = Settings(_env_file=None, mfa_required_roles=" admin, auditor ,")

        assert parsed.mfa_required_roles == frozenset({"admin", "auditor"})


class TestTokenUrl:
    def test_the_app_says_where_the_token_route_is(self) -> None:
        app = FastAPI()
        app.include_router(security_routes())
        register_token_url(app, "/api/v9/auth/token")

        schemes = app.openapi()["components"]["securitySchemes"]

        flow = schemes["OAuth2PasswordBearer"]["flows"]["password"]
        assert flow["tokenUrl"] == "/api/v9/auth/token"
        assert app.openapi() is app.openapi()

    def test_without_protected_routes_there_is_no_scheme_to_amend(self) -> None:
        app = FastAPI()
        register_token_url(app, "/api/v9/auth/token")

        assert "components" not in app.openapi()


class TestPrincipal:
    def test_has_role(self) -> None:
        assert ADMIN.has_role("admin")
        assert not USER.has_role("admin")

    def test_used_mfa_reads_the_amr(self) -> None:
        assert ADMIN_WITH_MFA.used_mfa
        assert not ADMIN.used_mfa
