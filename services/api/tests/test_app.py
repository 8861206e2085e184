from uuid import uuid4

import pytest
from aixiate_api.app import create_app
from aixiate_auth.settings import AuthSettings
from aixiate_core.settings import Settings, UnsafeSettingsError
from aixiate_core.testing import serve
from aixiate_users.testing import PASSWORD, fast_users_settings


class TestCreateApp:
    def test_refuses_unsafe_production_settings(self, settings: Settings) -> None:
        unsafe = settings.model_copy(update={"env": "production", "secret_key": None})
        with pytest.raises(UnsafeSettingsError, match="AIXIATE_SECRET_KEY"):
            create_app(unsafe)

    def test_feature_routers_are_mounted_under_the_version_prefix(self, settings: Settings) -> None:
        # Read from the OpenAPI document: app.routes holds included routers, not routes.
        paths = create_app(settings).openapi()["paths"]
        tags = {
            path: {tag for operation in item.values() for tag in operation.get("tags", [])}
            for path, item in paths.items()
        }
        unversioned = {path for path in paths if not path.startswith("/api/v1/")}

        assert len(paths) - len(unversioned) > 20
        # Only operations and the JWKS, which clients look up at the well-known path.
        assert {path for path in unversioned if "operations" not in tags[path]} == {
            "/.well-known/jwks.json"
        }

    def test_operation_ids_are_tag_and_name(self, settings: Settings) -> None:
        app = create_app(settings)
        operations = app.openapi()["paths"]["/health/ready"]["get"]
        assert operations["operationId"] == "operations-ready"

    def test_authorize_button_posts_to_the_token_route(self, settings: Settings) -> None:
        document = create_app(settings).openapi()
        scheme = document["components"]["securitySchemes"]["OAuth2PasswordBearer"]
        token_url = scheme["flows"]["password"]["tokenUrl"]
        assert token_url == "/api/v1/auth/token"
        assert "post" in document["paths"][token_url]

    async def test_serves_openapi_and_docs(self, settings: Settings) -> None:
        async with serve(create_app(settings)) as client:
            spec = await client.get("/openapi.json")
            docs = await client.get("/docs")
        assert spec.status_code == 200
        assert spec.json()["openapi"].startswith("3.1")
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()

    async def test_ready_on_the_migrated_schema(self, settings: Settings) -> None:
        async with serve(create_app(settings)) as client:
            response = await client.get("/health/ready")
        assert response.status_code == 200
        expected = {"database": "ok"} | ({"redis": "ok"} if settings.redis_url else {})
        assert response.json()["checks"] == expected


class TestSettingsOverrides:
    """What create_app is given reaches every route: no route reads settings of its own."""

    async def test_users_and_auth_settings_reach_registration_and_login(
        self, settings: Settings
    ) -> None:
        auth = AuthSettings(_env_file=None, require_email_verification=False)
        users = fast_users_settings(password_min_length=20)
        email = f"override-{uuid4().hex[:12]}@example.com"
        quiet = settings.model_copy(update={"outbox_dispatcher_enabled": False})

        async with serve(create_app(quiet, auth, users)) as client:
            short = await client.post(
                "/api/v1/auth/register", json={"email": email, "password": "x7!kq2Lm#pZ4-vivid"}
            )
            accepted = await client.post(
                "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
            )
            login = await client.post(
                "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
            )

        assert short.status_code == 422
        assert short.json()["reason"] == "too_short"
        assert short.json()["min_length"] == 20
        assert accepted.status_code == 202
        # Unverified, yet signed in: require_email_verification=False was honoured.
        assert login.status_code == 200, login.text
