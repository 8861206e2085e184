"""The audit log of the assembled service: every state-changing route leaves an event,
no secret reaches the log or the table, events share their change's fate, the chain
holds under concurrency and reveals tampering, and the query APIs show the right events."""

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID, uuid4

import httpx
import pyotp
import pytest
from aixiate_api.app import create_app
from aixiate_api.wiring import purge_jobs
from aixiate_audit import retention
from aixiate_audit import service as audit_service
from aixiate_audit.models import AuditEvent
from aixiate_audit.repository import AuditRepository
from aixiate_auth.oauth import ProviderSettings
from aixiate_auth.settings import AuthSettings
from aixiate_auth.testing import flow_cookie
from aixiate_auth.testing_provider import FakeOIDCProvider, ProviderUser, approve
from aixiate_core.app import API_PREFIX
from aixiate_core.db import SessionDep, commit, create_engine, create_sessionmaker, utc_now
from aixiate_core.settings import Settings
from aixiate_core.testing import bearer, postgres_server_url, serve
from aixiate_core.testing.mail import Mailbox, link_token
from aixiate_users import service as users_service
from aixiate_users.dependencies import CurrentUser
from aixiate_users.schemas import AdminUserCreate, UserUpdate
from aixiate_users.testing import audit_events
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

API = API_PREFIX
type RunCommand = Callable[..., subprocess.CompletedProcess[str]]
type ServiceFactory = Callable[..., FastAPI]
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def password() -> str:
    return f"audit-{uuid4().hex[:10]}-harbour"


class Inbox:
    """The emails the service queued, read from its outbox (no dispatcher runs: on SQLite
    its writes would race the walk's requests), each link handed out once."""

    def __init__(self, settings: Settings) -> None:
        self.engine = create_engine(settings)
        self.mailbox = Mailbox(settings, create_sessionmaker(self.engine))
        self._read: set[UUID] = set()

    async def token_to(self, address: str, path: str) -> str:
        for mail in await self.mailbox.to(address):
            if mail.id not in self._read and f"/{path}?token=" in mail.text:
                self._read.add(mail.id)
                return link_token(mail.text, path)
        raise AssertionError(f"no {path} email to {address}")


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient
    inbox: Inbox
    oidc: FakeOIDCProvider
    #: Every password and token a walk used: none may show up in the log or the table.
    secrets: set[str] = field(default_factory=set)

    async def create_user(self, *, admin: bool = False) -> tuple[str, str, UUID]:
        email, secret = f"audit-{uuid4().hex[:12]}@example.com", password()
        self.secrets.add(secret)
        body = AdminUserCreate(
            email=email, password=secret, roles=["admin"] if admin else [], is_verified=True
        )
        sessionmaker = self.app.state.auth.sessions.sessionmaker
        for attempt in range(20):
            try:
                async with sessionmaker() as session:  # one unit of work, as a request's
                    user = await users_service.create_user(
                        session, body, admin=None, passwords=self.app.state.auth.passwords
                    )
                    await commit(session)
                return email, secret, user.id
            except OperationalError:
                # SQLite: a transaction that read before the background jobs (housekeeping,
                # outbox) committed cannot write any more; try again, as a client would.
                if attempt == 19:
                    raise
                await asyncio.sleep(0.05)
        raise AssertionError("unreachable")

    async def login(self, email: str, secret: str) -> dict[str, Any]:
        response = await self.client.post(
            f"{API}/auth/login", json={"email": email, "password": secret}
        )
        assert response.status_code == 200, response.text
        pair: dict[str, Any] = response.json()
        self.secrets.update((pair["access_token"], pair["refresh_token"]))
        return pair


@pytest.fixture
def oidc() -> Iterator[FakeOIDCProvider]:
    with FakeOIDCProvider() as provider:
        yield provider


@pytest.fixture
async def service(
    settings: Settings, make_service: ServiceFactory, oidc: FakeOIDCProvider
) -> AsyncIterator[Service]:
    app_settings = settings.model_copy(
        update={
            "outbox_dispatcher_enabled": False,
            "housekeeping_enabled": False,
            "public_url": "https://app.example.com",
            "api_url": "http://aixiate.test",
        }
    )
    provider = ProviderSettings(
        issuer=oidc.issuer, client_id=oidc.client_id, client_secret=SecretStr(oidc.client_secret)
    )
    auth_settings = AuthSettings(_env_file=None, oauth_providers={"acme": provider})
    app = make_service(app_settings, auth_settings, password_hash_workers=2)
    inbox = Inbox(app_settings)
    try:
        async with serve(app) as client:
            yield Service(app, client, inbox, oidc)
    finally:
        await inbox.engine.dispose()


# --- every state-changing route, with a valid request -----------------------------------

type Step = Callable[[Service, dict[str, Any]], Awaitable[httpx.Response]]


async def _register(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    ctx["email"], ctx["password"] = f"walk-{uuid4().hex[:12]}@example.com", password()
    s.secrets.add(ctx["password"])
    return await s.client.post(
        f"{API}/auth/register", json={"email": ctx["email"], "password": ctx["password"]}
    )


async def _verify_email(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    token = await s.inbox.token_to(ctx["email"], "verify-email")
    s.secrets.add(token)
    return await s.client.post(f"{API}/auth/verify-email", json={"token": token})


async def _resend(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    unverified = f"walk-{uuid4().hex[:12]}@example.com"
    registered = await s.client.post(
        f"{API}/auth/register", json={"email": unverified, "password": password()}
    )
    assert registered.status_code == 202
    return await s.client.post(f"{API}/auth/verify-email/resend", json={"email": unverified})


def _keep_pair(s: Service, ctx: dict[str, Any], key: str, response: httpx.Response) -> None:
    """Puts the token pair of ``response`` in ``ctx[key]``, and among the walk's secrets."""
    ctx[key] = response.json()
    s.secrets.update((ctx[key]["access_token"], ctx[key]["refresh_token"]))


async def _login(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    credentials = {"email": ctx["email"], "password": ctx["password"]}
    response = await s.client.post(f"{API}/auth/login", json=credentials)
    _keep_pair(s, ctx, "pair", response)
    return response


async def _token(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    form = {"username": ctx["email"], "password": ctx["password"]}
    response = await s.client.post(f"{API}/auth/token", data=form)
    _keep_pair(s, ctx, "second_pair", response)
    return response


async def _refresh(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    refresh = {"refresh_token": ctx["pair"]["refresh_token"]}
    response = await s.client.post(f"{API}/auth/refresh", json=refresh)
    _keep_pair(s, ctx, "pair", response)
    return response


def _me(ctx: dict[str, Any]) -> dict[str, str]:
    return bearer(ctx["pair"]["access_token"])


async def _update_me(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    return await s.client.patch(f"{API}/users/me", json={"full_name": "Walker"}, headers=_me(ctx))


async def _revoke_session(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    listed = (await s.client.get(f"{API}/auth/sessions", headers=_me(ctx))).json()
    other = next(item["id"] for item in listed if not item["current"])
    return await s.client.delete(f"{API}/auth/sessions/{other}", headers=_me(ctx))


async def _request_email_change(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    ctx["new_email"] = f"walk-new-{uuid4().hex[:12]}@example.com"
    return await s.client.post(
        f"{API}/users/me/email",
        json={"new_email": ctx["new_email"], "password": ctx["password"]},
        headers=_me(ctx),
    )


async def _confirm_email(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    token = await s.inbox.token_to(ctx["new_email"], "confirm-email")
    s.secrets.add(token)
    ctx["email"] = ctx["new_email"]
    return await s.client.post(f"{API}/auth/confirm-email", json={"token": token})


async def _change_password(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    new = password()
    s.secrets.add(new)
    response = await s.client.post(
        f"{API}/auth/password/change",
        json={"current_password": ctx["password"], "new_password": new},
        headers=_me(ctx),
    )
    ctx["password"] = new
    return response


async def _forgot(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    return await s.client.post(f"{API}/auth/password/forgot", json={"email": ctx["email"]})


async def _reset(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    token, new = await s.inbox.token_to(ctx["email"], "reset-password"), password()
    s.secrets.update((token, new))
    ctx["password"] = new
    return await s.client.post(
        f"{API}/auth/password/reset", json={"token": token, "new_password": new}
    )


async def _mfa_setup(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    assert (await _login(s, ctx)).status_code == 200
    response = await s.client.post(f"{API}/auth/mfa/totp/setup", headers=_me(ctx))
    ctx["totp"] = pyotp.TOTP(response.json()["secret"])
    s.secrets.update((response.json()["secret"], response.json()["otpauth_uri"]))
    return response


async def _mfa_confirm(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    code = ctx["totp"].now()
    response = await s.client.post(
        f"{API}/auth/mfa/totp/confirm", json={"code": code}, headers=_me(ctx)
    )
    s.secrets.update(response.json()["recovery_codes"])
    return response


async def _login_mfa(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    credentials = {"email": ctx["email"], "password": ctx["password"]}
    challenge = (await s.client.post(f"{API}/auth/login", json=credentials)).json()
    s.secrets.add(challenge["mfa_token"])
    # The code the app shows next: the one that confirmed cannot be used again.
    code = ctx["totp"].at(time.time() + 30)
    response = await s.client.post(
        f"{API}/auth/login/mfa", json={"mfa_token": challenge["mfa_token"], "code": code}
    )
    _keep_pair(s, ctx, "pair", response)
    return response


async def _mfa_recovery_codes(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    response = await s.client.post(
        f"{API}/auth/mfa/recovery-codes", json={"password": ctx["password"]}, headers=_me(ctx)
    )
    s.secrets.update(response.json()["recovery_codes"])
    return response


async def _mfa_disable(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    return await s.client.request(
        "DELETE", f"{API}/auth/mfa/totp", json={"password": ctx["password"]}, headers=_me(ctx)
    )


RETURN = "https://app.example.com/signed-in"


async def _callback(s: Service, authorize_url: str, started: httpx.Response) -> str:
    """Approves at the provider and follows its redirect back (with the flow cookie
    ``started`` set): the front-end URL."""
    callback = urlsplit(await approve(authorize_url))
    response = await s.client.get(f"{callback.path}?{callback.query}", headers=flow_cookie(started))
    assert response.status_code == 302, response.text
    return response.headers["location"]


async def _oauth_link_start(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    s.oidc.next_user = ProviderUser.random()
    response = await s.client.post(
        f"{API}/users/me/identities/acme", json={"redirect_uri": RETURN}, headers=_me(ctx)
    )
    assert "linked=acme" in await _callback(s, response.json()["authorize_url"], response)
    return response


async def _oauth_unlink(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    return await s.client.delete(f"{API}/users/me/identities/acme", headers=_me(ctx))


async def _oauth_code(s: Service, user: ProviderUser) -> str:
    s.oidc.next_user = user
    start = await s.client.get(f"{API}/auth/oauth/acme/authorize", params={"redirect_uri": RETURN})
    landing = await _callback(s, start.headers["location"], start)
    code = parse_qs(urlsplit(landing).query)["code"][0]
    s.secrets.add(code)
    return code


async def _oauth_exchange(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    code = await _oauth_code(s, ProviderUser.random())
    response = await s.client.post(f"{API}/auth/oauth/exchange", json={"code": code})
    _keep_pair(s, ctx, "oauth_pair", response)
    return response


async def _oauth_link(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    code = await _oauth_code(s, ProviderUser(subject=f"walk-{uuid4().hex}", email=ctx["email"]))
    refused = await s.client.post(f"{API}/auth/oauth/exchange", json={"code": code})
    link_token = refused.json()["link_token"]
    s.secrets.add(link_token)
    response = await s.client.post(
        f"{API}/auth/oauth/link", json={"link_token": link_token, "password": ctx["password"]}
    )
    _keep_pair(s, ctx, "pair", response)
    return response


async def _logout(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    assert (await _login(s, ctx)).status_code == 200
    return await s.client.post(f"{API}/auth/logout", headers=_me(ctx))


async def _logout_all(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    assert (await _login(s, ctx)).status_code == 200
    return await s.client.post(f"{API}/auth/logout-all", headers=_me(ctx))


def _admin(ctx: dict[str, Any]) -> dict[str, str]:
    return bearer(ctx["admin_pair"]["access_token"])


async def _admin_create(s: Service, ctx: dict[str, Any], path: str) -> httpx.Response:
    secret = password()
    s.secrets.add(secret)
    email = f"walk-admin-made-{uuid4().hex[:12]}@example.com"
    response = await s.client.post(
        f"{API}{path}",
        json={"email": email, "password": secret, "is_verified": True},
        headers=_admin(ctx),
    )
    ctx.setdefault("created", []).append((email, secret, response.json()["id"]))
    return response


async def _admin_update(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    user_id = ctx["created"][0][2]
    return await s.client.patch(
        f"{API}/users/{user_id}", json={"full_name": "Renamed"}, headers=_admin(ctx)
    )


async def _admin_unlock(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    return await s.client.post(f"{API}/users/{ctx['created'][0][2]}/unlock", headers=_admin(ctx))


async def _admin_mfa_reset(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    return await s.client.delete(f"{API}/users/{ctx['created'][0][2]}/mfa", headers=_admin(ctx))


async def _admin_invite(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    ctx["invited"] = f"walk-invited-{uuid4().hex[:12]}@example.com"
    return await s.client.post(
        f"{API}/users/invite", json={"email": ctx["invited"]}, headers=_admin(ctx)
    )


async def _accept_invite(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    token, secret = await s.inbox.token_to(ctx["invited"], "accept-invite"), password()
    s.secrets.update((token, secret))
    response = await s.client.post(
        f"{API}/auth/invite/accept", json={"token": token, "password": secret}
    )
    _keep_pair(s, ctx, "invited_pair", response)
    return response


async def _admin_delete(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    return await s.client.delete(f"{API}/users/{ctx['created'][1][2]}", headers=_admin(ctx))


async def _delete_me(s: Service, ctx: dict[str, Any]) -> httpx.Response:
    email, secret, _ = ctx["created"][0]
    pair = await s.login(email, secret)
    return await s.client.request(
        "DELETE",
        f"{API}/users/me",
        json={"password": secret},
        headers=bearer(pair["access_token"]),
    )


#: (method, route path) -> a valid request. In walking order: later steps use earlier ones.
ROUTES: dict[tuple[str, str], Step] = {
    ("POST", f"{API}/auth/register"): _register,
    ("POST", f"{API}/auth/verify-email"): _verify_email,
    ("POST", f"{API}/auth/verify-email/resend"): _resend,
    ("POST", f"{API}/auth/login"): _login,
    ("POST", f"{API}/auth/token"): _token,
    ("POST", f"{API}/auth/refresh"): _refresh,
    ("PATCH", f"{API}/users/me"): _update_me,
    ("DELETE", f"{API}/auth/sessions/{{session_id}}"): _revoke_session,
    ("POST", f"{API}/users/me/email"): _request_email_change,
    ("POST", f"{API}/auth/confirm-email"): _confirm_email,
    ("POST", f"{API}/auth/password/change"): _change_password,
    ("POST", f"{API}/auth/password/forgot"): _forgot,
    ("POST", f"{API}/auth/password/reset"): _reset,
    ("POST", f"{API}/auth/mfa/totp/setup"): _mfa_setup,
    ("POST", f"{API}/auth/mfa/totp/confirm"): _mfa_confirm,
    ("POST", f"{API}/auth/login/mfa"): _login_mfa,
    ("POST", f"{API}/auth/mfa/recovery-codes"): _mfa_recovery_codes,
    ("DELETE", f"{API}/auth/mfa/totp"): _mfa_disable,
    ("POST", f"{API}/users/me/identities/{{provider}}"): _oauth_link_start,
    ("DELETE", f"{API}/users/me/identities/{{provider}}"): _oauth_unlink,
    ("POST", f"{API}/auth/oauth/exchange"): _oauth_exchange,
    ("POST", f"{API}/auth/oauth/link"): _oauth_link,
    ("POST", f"{API}/auth/logout"): _logout,
    ("POST", f"{API}/auth/logout-all"): _logout_all,
    ("POST", f"{API}/users/"): lambda s, ctx: _admin_create(s, ctx, "/users/"),
    ("POST", f"{API}/users"): lambda s, ctx: _admin_create(s, ctx, "/users"),
    ("PATCH", f"{API}/users/{{user_id}}"): _admin_update,
    ("POST", f"{API}/users/{{user_id}}/unlock"): _admin_unlock,
    ("DELETE", f"{API}/users/{{user_id}}/mfa"): _admin_mfa_reset,
    ("POST", f"{API}/users/invite"): _admin_invite,
    ("POST", f"{API}/auth/invite/accept"): _accept_invite,
    ("DELETE", f"{API}/users/{{user_id}}"): _admin_delete,
    ("DELETE", f"{API}/users/me"): _delete_me,
}


def state_changing_routes(app: FastAPI) -> set[tuple[str, str]]:
    # Included routers are resolved lazily (FastAPI >= 0.16x): walk their effective routes,
    # hidden spellings (include_in_schema=False) included.
    return {
        (method, route.path)
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute)
        and route.path is not None
        and route.path.startswith(API)
        for method in (route.methods or set()) & STATE_CHANGING
    }


async def walk(s: Service) -> dict[tuple[str, str], httpx.Response]:
    admin_email, admin_secret, _ = await s.create_user(admin=True)
    ctx: dict[str, Any] = {"admin_pair": await s.login(admin_email, admin_secret)}
    responses = {}
    for key, step in ROUTES.items():
        response = await step(s, ctx)
        assert response.is_success, f"{key}: {response.status_code} {response.text}"
        responses[key] = response
    return responses


class TestCoverage:
    def test_every_state_changing_route_has_a_step(self, settings: Settings) -> None:
        # A new route fails here until it gets a step below (and, then, an event).
        routes = state_changing_routes(create_app(settings))
        assert routes - set(ROUTES) == set(), "add these routes to ROUTES"
        assert set(ROUTES) - routes == set(), "these routes are gone; drop their steps"

    async def test_every_state_changing_route_records_an_event(
        self, service: Service, engine: AsyncEngine
    ) -> None:
        responses = await walk(service)
        silent = [key for key, r in responses.items() if not await audit_events(engine, response=r)]
        assert silent == []
        # The request id of the event is the response's, as on the log lines.
        login = await audit_events(engine, response=responses[("POST", f"{API}/auth/login")])
        assert [e.event_type for e in login] == ["auth.login.succeeded"]
        assert login[0].ip == "203.0.113.7"


class TestNoSecrets:
    async def test_no_secret_reaches_the_audit_table_or_the_log(
        self, service: Service, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
    ) -> None:
        await walk(service)
        # Failures are audited too: a wrong password, a reused refresh token.
        email, secret, _ = await service.create_user()
        pair = await service.login(email, secret)
        wrong = f"{secret}-wrong"
        service.secrets.add(wrong)
        await service.client.post(f"{API}/auth/login", json={"email": email, "password": wrong})
        refreshed = await service.client.post(
            f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert refreshed.status_code == 200
        service.secrets.update(
            (refreshed.json()["access_token"], refreshed.json()["refresh_token"])
        )
        await service.client.post(
            f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        # ... and refused tokens and passwords, each committed on its own.
        refused = await refuse_everything(service, email)
        failures = [await audit_events(engine, response=response) for response in refused]
        assert [[(e.event_type, e.success) for e in found] for found in failures] == [
            [("auth.refresh.failed", False)],
            [("user.email.verify.failed", False)],
            [("user.email.change.failed", False)],
            [("auth.password.reset.failed", False)],
            [("user.email.change_request.failed", False)],
            [("user.delete.failed", False)],
        ]
        log = capsys.readouterr()
        async with create_sessionmaker(engine)() as session:
            rows = (await session.exec(select(AuditEvent))).all()
        table = json.dumps([row.model_dump(mode="json") for row in rows])
        assert "audit.event" in log.err + log.out
        secrets = {value for value in service.secrets if isinstance(value, str)}
        assert len(secrets) > 20
        leaked = [value[:12] for value in secrets if value in table or value in log.err + log.out]
        assert leaked == []


async def refuse_everything(s: Service, email: str) -> list[httpx.Response]:
    """Requests that present an unknown token or a wrong password, one per route that
    audits its refusals; every token and password goes into ``s.secrets``."""
    tokens = [f"refused-{uuid4().hex}{uuid4().hex}" for _ in range(4)]
    wrong, new = password(), password()
    s.secrets.update((*tokens, wrong, new))
    pair = await s.login(*(await s.create_user())[:2])
    me = bearer(pair["access_token"])
    responses = [
        await s.client.post(f"{API}/auth/refresh", json={"refresh_token": tokens[0]}),
        await s.client.post(f"{API}/auth/verify-email", json={"token": tokens[1]}),
        await s.client.post(f"{API}/auth/confirm-email", json={"token": tokens[2]}),
        await s.client.post(
            f"{API}/auth/password/reset", json={"token": tokens[3], "new_password": new}
        ),
        await s.client.post(
            f"{API}/users/me/email", json={"new_email": email, "password": wrong}, headers=me
        ),
        await s.client.request("DELETE", f"{API}/users/me", json={"password": wrong}, headers=me),
    ]
    assert [r.status_code for r in responses] == [401, 400, 400, 400, 403, 403]
    return responses


class TestAtomicity:
    async def test_a_change_and_its_event_roll_back_together(
        self, service: Service, engine: AsyncEngine
    ) -> None:
        router = APIRouter()

        @router.post("/test/update-then-fail")
        async def update_then_fail(user: CurrentUser, session: SessionDep) -> None:
            await users_service.update_me(session, user, UserUpdate(full_name="Never"))
            raise RuntimeError("after the event was recorded")

        service.app.include_router(router)
        email, secret, user_id = await service.create_user()
        pair = await service.login(email, secret)
        failed = await service.client.post(
            "/test/update-then-fail", headers=bearer(pair["access_token"])
        )
        assert failed.status_code == 500
        me = await service.client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
        assert me.json()["full_name"] is None
        async with create_sessionmaker(engine)() as session:
            updated = await session.exec(
                select(AuditEvent)
                .where(col(AuditEvent.event_type) == "user.updated")
                .where(col(AuditEvent.target_id) == str(user_id))
            )
            assert updated.all() == []
        # The same change, committed: both are there.
        done = await service.client.patch(
            f"{API}/users/me", json={"full_name": "Now"}, headers=bearer(pair["access_token"])
        )
        assert [e.event_type for e in await audit_events(engine, response=done)] == ["user.updated"]


class TestChainUnderLoad:
    async def test_200_concurrent_failed_logins_leave_a_verifiable_chain(
        self, service: Service, engine: AsyncEngine
    ) -> None:
        admin_email, admin_secret, _ = await service.create_user(admin=True)
        admin = bearer((await service.login(admin_email, admin_secret))["access_token"])
        marker = uuid4().hex[:8]

        async def attempt(n: int) -> httpx.Response:
            return await service.client.post(
                f"{API}/auth/login",
                json={"email": f"nobody-{marker}-{n}@example.com", "password": "x" * 12},
            )

        answers = await asyncio.gather(*(attempt(n) for n in range(200)))
        assert {a.status_code for a in answers} == {401}
        failed = 0
        for answer in answers:
            failed += len(await audit_events(engine, response=answer))
        assert failed == 200
        verified = await service.client.get(f"{API}/audit/verify", headers=admin)
        assert verified.json()["ok"] is True, verified.json()
        assert verified.json()["checked"] >= 200


class TestSecurityEvents:
    async def test_a_user_sees_only_events_about_themselves(self, service: Service) -> None:
        email, secret, user_id = await service.create_user()
        other_email, other_secret, other_id = await service.create_user()
        admin_email, admin_secret, admin_id = await service.create_user(admin=True)
        pair = await service.login(email, secret)
        await service.login(other_email, other_secret)
        admin = bearer((await service.login(admin_email, admin_secret))["access_token"])
        await service.client.patch(
            f"{API}/users/{user_id}", json={"full_name": "Set By Admin"}, headers=admin
        )
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await service.client.get(
                f"{API}/users/me/security-events",
                params={"limit": 1} | ({"cursor": cursor} if cursor else {}),
                headers=bearer(pair["access_token"]),
            )
            assert page.status_code == 200, page.text
            items += page.json()["items"]
            if (cursor := page.json()["next_cursor"]) is None:
                break
        types = [item["event_type"] for item in items]
        assert "auth.login.succeeded" in types
        assert "admin.user.updated" in types
        for item in items:
            assert item["actor_id"] in (str(user_id), None)
            assert item["target_id"] not in (str(other_id), str(admin_id))
        by_admin = next(item for item in items if item["event_type"] == "admin.user.updated")
        assert (by_admin["actor_id"], by_admin["ip"]) == (None, None)

    async def test_anonymous_callers_get_401(self, service: Service) -> None:
        response = await service.client.get(f"{API}/users/me/security-events")
        assert response.status_code == 401


needs_partitions = pytest.mark.skipif(
    postgres_server_url() is None,
    reason="monthly partitions are PostgreSQL's; set AIXIATE_TEST_DATABASE_URL",
)


class TestRetention:
    def test_housekeeping_runs_the_audit_jobs(self, settings: Settings) -> None:
        assert {"audit_partitions", "audit_log"} <= set(purge_jobs(settings))

    async def test_prune_drops_old_months_and_creates_coming_ones(self, settings: Settings) -> None:
        engine = create_engine(settings)
        try:
            async with create_sessionmaker(engine)() as session:
                partitioned = await retention.is_partitioned(session)
                assert partitioned == (not settings.is_sqlite)
                if not partitioned:
                    return
                now = utc_now()
                old = await retention.ensure_partitions(session, now - timedelta(days=800), 0)
                assert len(old) == 1
                ahead = await retention.ensure_partitions(session, now, 6)
                assert len(ahead) == 3  # the migration made this month and three more
                # A newest event, whatever ran before: prune never empties the chain.
                session.add(audit_service.build_event("test.head"))
                await session.flush()
                result = await retention.prune(session, now, retention_days=365)
                assert result.partitions_dropped == tuple(old)
                assert (await AuditRepository(session).verify_chain()).ok
                await session.rollback()
        finally:
            await engine.dispose()

    @needs_partitions
    async def test_an_event_of_a_month_without_partition_is_kept_then_moved(
        self, partitioned: AsyncSession
    ) -> None:
        later = utc_now() + timedelta(days=400)  # far past the months made ahead
        stray = await _add_event(partitioned, "test.stray", later)
        assert await _partition_of(partitioned, stray.id) == "audit_event_default"

        created = await retention.ensure_partitions(partitioned, later, 0)

        assert created == [retention.partition_name(retention.month_start(later))]
        assert await _partition_of(partitioned, stray.id) == created[0]
        assert (await AuditRepository(partitioned).verify_chain()).ok

    @needs_partitions
    async def test_prune_deletes_old_strays_of_the_default_partition(
        self, partitioned: AsyncSession
    ) -> None:
        # Housekeeping stopped: events of months without partitions pile up in the
        # default partition (occurred_at never goes back along the chain).
        later = utc_now() + timedelta(days=400)
        stray = await _add_event(partitioned, "test.stray", later)
        head = await _add_event(partitioned, "test.head", later + timedelta(days=1))
        assert await _partition_of(partitioned, stray.id) == "audit_event_default"

        result = await retention.prune(partitioned, later + timedelta(days=400), retention_days=365)

        assert result.rows_deleted == 1
        connection = await partitioned.connection()
        left = await connection.execute(
            text("SELECT id FROM audit_event WHERE id IN (:stray, :head)"),
            {"stray": stray.id, "head": head.id},
        )
        assert [row.id for row in left] == [head.id]  # never the newest


@pytest.fixture
async def partitioned(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session on the service's partitioned audit log, rolled back (DDL too) after."""
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            assert await retention.is_partitioned(session)
            yield session
            await session.rollback()
    finally:
        await engine.dispose()


async def _add_event(session: AsyncSession, event_type: str, occurred_at: datetime) -> AuditEvent:
    event = audit_service.build_event(event_type)
    event.occurred_at = occurred_at
    session.add(event)
    await session.flush()
    return event


async def _partition_of(session: AsyncSession, event_id: UUID) -> str:
    connection = await session.connection()
    found = await connection.execute(
        text("SELECT tableoid::regclass::text FROM audit_event WHERE id = :id"), {"id": event_id}
    )
    return str(found.scalar_one())


class TestCommandLine:
    def test_verify_reports_tampering_and_prune_runs(
        self, aixiate_command: RunCommand, service_settings: Settings
    ) -> None:
        intact = aixiate_command("audit", "verify")
        assert intact.returncode == 0, intact.stderr
        assert "ok: true" in intact.stdout

        async def tamper(reason: str | None, victim: UUID | None = None) -> UUID:
            engine = create_engine(service_settings)
            try:
                async with create_sessionmaker(engine)() as session, session.begin():
                    if victim is None:
                        victim = (
                            (
                                await session.exec(
                                    select(AuditEvent).order_by(col(AuditEvent.seq)).limit(1)
                                )
                            )
                            .one()
                            .id
                        )
                    await session.exec(
                        update(AuditEvent).where(col(AuditEvent.id) == victim).values(reason=reason)
                    )
                    return victim
            finally:
                await engine.dispose()

        original = asyncio.run(_first_reason(service_settings))
        victim = asyncio.run(tamper("forged"))
        try:
            broken = aixiate_command("audit", "verify")
            assert broken.returncode == 1
            assert f"first_bad_id: {victim}" in broken.stdout
            assert "problem: hash_mismatch" in broken.stdout
        finally:
            asyncio.run(tamper(original, victim))
        assert aixiate_command("audit", "verify").returncode == 0

        pruned = aixiate_command("audit", "prune")
        assert pruned.returncode == 0, pruned.stderr
        assert "rows_deleted: 0" in pruned.stdout


async def _first_reason(settings: Settings) -> str | None:
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            first = (
                await session.exec(select(AuditEvent).order_by(col(AuditEvent.seq)).limit(1))
            ).one()
            return first.reason
    finally:
        await engine.dispose()
