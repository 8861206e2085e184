from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from aixiate_core import testing
from aixiate_core.db import SessionDep
from aixiate_core.errors import (
    PROBLEM_CONTENT_TYPE,
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NotAuthenticated,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    install_error_handlers,
    is_connection_error,
    problem_responses,
)
from aixiate_core.settings import Settings
from aixiate_core.testing import serve
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

type AppFactory = Callable[[Settings, APIRouter], FastAPI]

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "code", "request_id"}
SECRET_INPUT = "hunter2-correct-horse"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The RFC 9457 shape of every error in full, beyond what every package's tests check."""
    body = testing.assert_problem(response, status, code)
    assert body["type"] == "https://aixiate.dev/problems/" + code.replace("_", "-")
    assert body["instance"] == response.request.url.path
    assert body["title"]
    assert body["detail"]
    return body


class Signup(BaseModel):
    email: str = Field(min_length=3)
    password: str = Field(min_length=40)


ERRORS: dict[str, AppError] = {
    "bad-request": BadRequest(),
    "not-authenticated": NotAuthenticated(),
    "invalid-token": InvalidToken(),
    "forbidden": Forbidden(),
    "not-found": NotFound("No such widget."),
    "conflict": Conflict(extra={"field": "email"}),
    "rate-limited": RateLimited(30),
    "unavailable": ServiceUnavailable(retry_after=7),
}


def error_routes() -> APIRouter:
    router = APIRouter()

    @router.post("/signup")
    async def signup(body: Signup) -> dict[str, str]:
        return {"email": body.email}

    @router.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @router.get("/raise/{name}")
    async def raise_error(name: str) -> None:
        raise ERRORS[name]

    @router.get("/database")
    async def use_database(session: SessionDep) -> dict[str, int]:
        conn = await session.connection()
        return {"one": int(await conn.scalar(text("SELECT 1")) or 0)}

    return router


@pytest.fixture
async def client(make_app: AppFactory, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make_app(settings, error_routes())) as http:
        yield http


class TestProblemShape:
    @pytest.mark.parametrize(
        ("method", "path", "kwargs", "status"),
        [
            pytest.param("GET", "/nowhere", {}, 404, id="unknown-route"),
            pytest.param("DELETE", "/signup", {}, 405, id="wrong-method"),
            pytest.param("POST", "/signup", {"content": b"{"}, 400, id="malformed-json"),
            pytest.param("GET", "/items/abc", {}, 422, id="validation"),
            pytest.param("GET", "/raise/conflict", {}, 409, id="domain-error"),
        ],
    )
    async def test_exact_keys(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        kwargs: dict[str, Any],
        status: int,
    ) -> None:
        response = await client.request(
            method, path, headers={"content-type": "application/json"}, **kwargs
        )

        assert response.status_code == status
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        expected = set(PROBLEM_KEYS)
        if status == 422:
            expected.add("errors")
        if path == "/raise/conflict":
            expected.add("field")
        assert set(response.json()) == expected


class TestHttpErrors:
    async def test_unknown_route(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.get("/nowhere"), 404, "not_found")

    async def test_wrong_method(self, client: httpx.AsyncClient) -> None:
        response = await client.delete("/signup")

        body = assert_problem(response, 405, "method_not_allowed")
        assert "DELETE" in body["detail"]
        assert "POST" in response.headers["allow"]


class TestRequestBodies:
    @pytest.mark.parametrize(
        ("content", "content_type", "status", "code"),
        [
            (b'{"email": "a@example.com", "password": ', "application/json", 400, "malformed_json"),
            (
                b'{"email": "a@example.com", "password": "x"}',
                "text/plain",
                415,
                "unsupported_media_type",
            ),
        ],
        ids=["malformed_json", "wrong_content_type"],
    )
    async def test_unreadable_body(
        self, client: httpx.AsyncClient, content: bytes, content_type: str, status: int, code: str
    ) -> None:
        response = await client.post(
            "/signup", content=content, headers={"content-type": content_type}
        )

        assert_problem(response, status, code)

    async def test_no_body_at_all_is_a_missing_body_not_a_media_type(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post("/signup")

        body = assert_problem(response, 422, "validation_error")
        assert [tuple(err["loc"]) for err in body["errors"]] == [("body",)]

    async def test_bytes_without_a_content_type_are_an_unsupported_media_type(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post("/signup", content=b"email=a@example.com")

        assert_problem(response, 415, "unsupported_media_type")

    async def test_validation_error_lists_errors(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/signup", json={"email": "a", "password": SECRET_INPUT})

        body = assert_problem(response, 422, "validation_error")
        assert body["errors"]
        assert {tuple(err["loc"]) for err in body["errors"]} == {
            ("body", "email"),
            ("body", "password"),
        }
        for err in body["errors"]:
            assert set(err) == {"loc", "msg", "type"}
            assert isinstance(err["msg"], str)
            assert isinstance(err["type"], str)

    async def test_validation_error_does_not_echo_input(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/signup", json={"email": "a", "password": SECRET_INPUT})

        assert response.status_code == 422
        assert SECRET_INPUT not in response.text

    async def test_path_parameter_validation(self, client: httpx.AsyncClient) -> None:
        body = assert_problem(await client.get("/items/abc"), 422, "validation_error")

        assert body["errors"][0]["loc"] == ["path", "item_id"]


class TestAppErrors:
    async def test_not_authenticated_challenges_for_bearer(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/raise/not-authenticated")

        assert_problem(response, 401, "not_authenticated")
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_invalid_token_says_so_in_the_challenge(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/raise/invalid-token")

        assert_problem(response, 401, "invalid_token")
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    async def test_rate_limited_carries_retry_after(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/raise/rate-limited")

        assert_problem(response, 429, "rate_limited")
        assert response.headers["retry-after"] == "30"

    async def test_forbidden(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.get("/raise/forbidden"), 403, "forbidden")

    async def test_bad_request(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.get("/raise/bad-request"), 400, "bad_request")

    async def test_custom_detail(self, client: httpx.AsyncClient) -> None:
        body = assert_problem(await client.get("/raise/not-found"), 404, "not_found")

        assert body["detail"] == "No such widget."

    async def test_extra_members(self, client: httpx.AsyncClient) -> None:
        body = assert_problem(await client.get("/raise/conflict"), 409, "conflict")

        assert body["field"] == "email"

    async def test_service_unavailable_carries_retry_after(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/raise/unavailable")

        assert_problem(response, 503, "service_unavailable")
        assert response.headers["retry-after"] == "7"

    def test_retry_after_is_at_least_one_second(self) -> None:
        assert RateLimited(0).headers["Retry-After"] == "1"


class TestBackendOutage:
    async def test_unreachable_database_is_503(
        self, make_app: AppFactory, database_down: Settings
    ) -> None:
        async with serve(make_app(database_down, error_routes())) as client:
            response = await client.get("/database")

        body = assert_problem(response, 503, "service_unavailable")
        assert response.headers["retry-after"] == "5"
        assert "asyncpg" not in response.text
        assert "Error" not in body["detail"]

    async def test_database_that_does_not_answer_is_503(
        self, make_app: AppFactory, database_hung: Settings
    ) -> None:
        hung = database_hung.model_copy(update={"database_connect_timeout_seconds": 0.2})
        async with serve(make_app(hung, error_routes())) as client:
            response = await client.get("/database")

        assert_problem(response, 503, "service_unavailable")

    async def test_database_answers_when_up(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/database")

        assert response.status_code == 200
        assert response.json() == {"one": 1}


class TestIsConnectionError:
    @pytest.mark.parametrize(
        "exc",
        [
            pytest.param(RedisConnectionError("down"), id="redis"),
            pytest.param(PoolTimeoutError("pool exhausted"), id="pool-timeout"),
            pytest.param(ConnectionRefusedError(), id="refused"),
            pytest.param(TimeoutError(), id="timeout"),
            pytest.param(
                OperationalError("SELECT 1", {}, ConnectionResetError()), id="dbapi-oserror"
            ),
            pytest.param(
                DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
                id="dbapi-invalidated",
            ),
        ],
    )
    def test_outages(self, exc: BaseException) -> None:
        assert is_connection_error(exc)

    @pytest.mark.parametrize(
        "exc",
        [
            pytest.param(IntegrityError("INSERT", {}, Exception("duplicate")), id="integrity"),
            pytest.param(ValueError("bug"), id="bug"),
        ],
    )
    def test_not_outages(self, exc: BaseException) -> None:
        assert not is_connection_error(exc)


class Widget(BaseModel):
    name: str


class WidgetNotFound(NotFound):
    code = "widget_not_found"
    default_detail = "No widget has this id."


class TestProblemResponses:
    def test_every_problem_refers_to_one_component(self) -> None:
        app = FastAPI()
        install_error_handlers(app)

        @app.put(
            "/widgets/{widget_id}",
            responses=problem_responses(WidgetNotFound, Conflict, admin=True),
        )
        async def put_widget(widget_id: int, body: Widget) -> Widget:
            return body

        document = app.openapi()

        responses = document["paths"]["/widgets/{widget_id}"]["put"]["responses"]
        problems = {status: response for status, response in responses.items() if status != "200"}
        assert set(problems) == {"401", "403", "404", "409", "422"}
        for response in problems.values():
            assert response["content"] == {
                PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
            }
        assert "`widget_not_found`: No widget has this id." in problems["404"]["description"]
        schemas = document["components"]["schemas"]
        assert set(schemas["Problem"]["required"]) == PROBLEM_KEYS
        assert "errors" in schemas["Problem"]["properties"]
        # Our 422 replaces FastAPI's own, which has another shape.
        assert "HTTPValidationError" not in schemas
        assert app.openapi() == document

    def test_flags_choose_the_common_problems(self) -> None:
        assert set(problem_responses()) == {401, 422}
        assert set(problem_responses(admin=True, validation=False)) == {401, 403}
        assert problem_responses(NotFound, auth=False, validation=False) == {
            404: {
                "description": "`not_found`: The resource does not exist.",
                "content": {
                    PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                },
            }
        }
