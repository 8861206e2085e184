"""Signing keys: the first one made exactly once, rotation, the JWKS, and rotations made
by another process. Each test gets a database of its own (``own_settings``)."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from uuid import UUID

import httpx
import pytest
from aixiate_auth.access_tokens import encode_access_token
from aixiate_auth.keys import KeyRing
from aixiate_auth.models import SigningKey
from aixiate_auth.services import keys
from aixiate_auth.settings import AuthSettings
from aixiate_auth.state import AuthState
from aixiate_auth.testing import AuthAppFactory, kid_of, session_id_of
from aixiate_core.crypto import DecryptionError, SecretBox
from aixiate_core.db import create_engine, create_sessionmaker, utc_now
from aixiate_core.settings import Settings
from aixiate_core.testing import FakeClock, Sessions, bearer, serve
from aixiate_users.passwords import Passwords
from aixiate_users.testing import PASSWORD, create_user_with_password
from fastapi import FastAPI
from joserfc.jwk import ECKey
from sqlalchemy import update
from sqlmodel import col, select

LOGIN = "/api/v1/auth/login"
ME = "/api/v1/users/me"
JWKS = "/.well-known/jwks.json"


def box_for(settings: Settings) -> SecretBox:
    return SecretBox(settings.secret(), "signing-keys")


async def stored_keys(db: Sessions) -> list[SigningKey]:
    async with db() as session:
        statement = select(SigningKey).order_by(col(SigningKey.generation))
        return list((await session.exec(statement)).all())


async def rotate_elsewhere(db: Sessions, settings: Settings) -> SigningKey:
    """What ``aixiate keys rotate`` does, from outside the running app."""
    async with db() as session, session.begin():
        return await keys.rotate(session, box_for(settings))


async def retire_long_ago(db: Sessions, kid: str, auth_settings: AuthSettings) -> None:
    window = auth_settings.access_token_ttl_seconds + auth_settings.jwt_leeway_seconds
    async with db() as session, session.begin():
        await session.exec(
            update(SigningKey)
            .where(col(SigningKey.kid) == kid)
            .values(retired_at=utc_now() - timedelta(seconds=window + 1))
        )


class Service:
    """A running app on the test's own database, with one user who can log in."""

    def __init__(self, client: httpx.AsyncClient, auth_state: AuthState, email: str) -> None:
        self.client = client
        self.runtime = auth_state
        self.email = email

    async def login(self) -> str:
        response = await self.client.post(LOGIN, json={"email": self.email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    async def me(self, token: str) -> int:
        return (await self.client.get(ME, headers=bearer(token))).status_code

    async def jwks_kids(self) -> list[str]:
        response = await self.client.get(JWKS)
        assert response.status_code == 200
        return [key["kid"] for key in response.json()["keys"]]


@asynccontextmanager
async def running_service(
    app: FastAPI, db: Sessions, passwords: Passwords
) -> AsyncIterator[Service]:
    """``app`` serving, with one user who can log in."""
    async with db() as session, session.begin():
        user = await create_user_with_password(session, passwords)
    async with serve(app) as client:
        yield Service(client, app.state.auth, user.email)


@pytest.fixture
async def service(
    make_auth_app: AuthAppFactory, own_settings: Settings, own_db: Sessions, passwords: Passwords
) -> AsyncIterator[Service]:
    # Periodic reloads far apart: every reload in these tests is one the test caused.
    app = make_auth_app(own_settings, AuthSettings(_env_file=None, key_reload_seconds=3600))
    async with running_service(app, own_db, passwords) as running:
        yield running


class TestFirstKey:
    async def test_concurrent_starts_create_exactly_one_key(
        self, own_settings: Settings, own_db: Sessions, auth_settings: AuthSettings
    ) -> None:
        engines = [create_engine(own_settings) for _ in range(5)]
        rings = [
            KeyRing(create_sessionmaker(engine), box_for(own_settings), auth_settings)
            for engine in engines
        ]
        try:
            await asyncio.gather(*(ring.start() for ring in rings))
        finally:
            for engine in engines:
                await engine.dispose()

        (row,) = await stored_keys(own_db)
        assert row.generation == 1
        assert row.retired_at is None
        assert {ring.signing_key().kid for ring in rings} == {row.kid}

    async def test_a_later_start_uses_the_existing_key(
        self, own_settings: Settings, own_db: Sessions, auth_settings: AuthSettings
    ) -> None:
        first = KeyRing(own_db, box_for(own_settings), auth_settings)
        await first.start()
        second = KeyRing(own_db, box_for(own_settings), auth_settings)

        await second.start()

        assert len(await stored_keys(own_db)) == 1
        assert second.signing_key().kid == first.signing_key().kid

    async def test_private_half_is_stored_sealed(
        self, own_settings: Settings, own_db: Sessions, auth_settings: AuthSettings
    ) -> None:
        ring = KeyRing(own_db, box_for(own_settings), auth_settings)
        await ring.start()

        (row,) = await stored_keys(own_db)

        d = str(ring.signing_key().key.as_dict(private=True)["d"])
        assert d.encode() not in row.private_key
        assert "d" not in row.public_jwk
        assert json.loads(box_for(own_settings).open(row.private_key))["d"] == d
        with pytest.raises(DecryptionError):
            SecretBox("another-secret-key-" + "y" * 40, "signing-keys").open(row.private_key)
        # RFC 7638: the kid is the thumbprint of the public key.
        assert row.kid == ECKey.import_key(row.public_jwk).thumbprint()


class TestJWKS:
    async def test_publishes_public_members_only(self, service: Service) -> None:
        response = await service.client.get(JWKS)

        assert response.status_code == 200
        assert "max-age" in response.headers["cache-control"]
        (key,) = response.json()["keys"]
        assert key["kty"] == "EC"
        assert key["crv"] == "P-256"
        assert key["alg"] == "ES256"
        assert key["use"] == "sig"
        assert key["kid"] == service.runtime.keyring.signing_key().kid
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key)


class TestRotate:
    async def test_new_key_signs_and_old_tokens_keep_working(
        self, service: Service, own_db: Sessions, own_settings: Settings
    ) -> None:
        old_token = await service.login()
        old_kid = kid_of(old_token)

        new = await rotate_elsewhere(own_db, own_settings)
        await service.runtime.keyring.reload()

        rows = {row.kid: row for row in await stored_keys(own_db)}
        assert rows[old_kid].retired_at is not None
        assert rows[new.kid].retired_at is None
        assert rows[new.kid].generation == rows[old_kid].generation + 1
        new_token = await service.login()
        assert kid_of(new_token) == new.kid
        assert await service.me(old_token) == 200
        assert await service.me(new_token) == 200
        assert await service.jwks_kids() == [new.kid, old_kid]

    async def test_rotating_twice_keeps_one_active_key(
        self, service: Service, own_db: Sessions, own_settings: Settings
    ) -> None:
        await rotate_elsewhere(own_db, own_settings)
        latest = await rotate_elsewhere(own_db, own_settings)

        rows = await stored_keys(own_db)

        assert [row.kid for row in rows if row.retired_at is None] == [latest.kid]
        assert [row.generation for row in rows] == [1, 2, 3]

    async def test_retired_key_leaves_the_jwks_when_its_last_token_has_expired(
        self,
        service: Service,
        own_db: Sessions,
        own_settings: Settings,
    ) -> None:
        old_token = await service.login()
        old_kid = kid_of(old_token)
        # Accepted once, so the auth_state remembers it as verified: that memo must not
        # outlive the key.
        assert await service.me(old_token) == 200
        new = await rotate_elsewhere(own_db, own_settings)

        await retire_long_ago(own_db, old_kid, service.runtime.settings)
        await service.runtime.keyring.reload()

        assert await service.jwks_kids() == [new.kid]
        assert await service.me(old_token) == 401
        assert await service.me(await service.login()) == 200

    async def test_retired_key_stays_while_its_tokens_may_live(
        self, service: Service, own_db: Sessions, own_settings: Settings
    ) -> None:
        old_token = await service.login()
        old_kid = kid_of(old_token)
        new = await rotate_elsewhere(own_db, own_settings)
        window = service.runtime.keyring.publish_window()
        async with own_db() as session, session.begin():
            await session.exec(
                update(SigningKey)
                .where(col(SigningKey.kid) == old_kid)
                .values(retired_at=utc_now() - window + timedelta(minutes=5))
            )

        await service.runtime.keyring.reload()

        assert await service.jwks_kids() == [new.kid, old_kid]
        assert await service.me(old_token) == 200


class TestRotationElsewhere:
    async def token_from_another_process(
        self, service: Service, own_db: Sessions, own_settings: Settings
    ) -> tuple[str, str]:
        """Rotates from outside and signs a token for a live session with the new key,
        as a replica that has already reloaded would."""
        live = await service.login()
        await rotate_elsewhere(own_db, own_settings)
        other = KeyRing(own_db, box_for(own_settings), service.runtime.settings)
        await other.start()
        loaded = other.signing_key()
        user_id = UUID((await service.client.get(ME, headers=bearer(live))).json()["id"])
        token, _ = encode_access_token(
            service.runtime.settings,
            kid=loaded.kid,
            key=loaded.key,
            user_id=user_id,
            session_id=session_id_of(live),
            roles=[],
            amr=["pwd"],
        )
        return token, loaded.kid

    async def test_unknown_kid_makes_the_app_reload_its_keys(
        self, service: Service, own_db: Sessions, own_settings: Settings
    ) -> None:
        token, kid = await self.token_from_another_process(service, own_db, own_settings)
        assert kid not in await service.jwks_kids()

        assert await service.me(token) == 200

        assert kid in await service.jwks_kids()
        assert kid_of(await service.login()) == kid

    async def test_forged_kids_cause_at_most_one_reload_per_interval(
        self,
        service: Service,
        own_db: Sessions,
        own_settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        keyring = service.runtime.keyring
        reloads = 0
        reload = keyring.reload

        async def counting_reload() -> None:
            nonlocal reloads
            reloads += 1
            await reload()

        monkeypatch.setattr(keyring, "reload", counting_reload)
        token, _ = await self.token_from_another_process(service, own_db, own_settings)
        forged = []
        for _ in range(10):
            key = ECKey.generate_key("P-256", private=True)
            forged.append(
                encode_access_token(
                    service.runtime.settings,
                    kid=key.thumbprint(),
                    key=key,
                    user_id=UUID(int=1),
                    session_id=UUID(int=2),
                    roles=[],
                    amr=["pwd"],
                )[0]
            )

        assert await service.me(token) == 200
        statuses = await asyncio.gather(*(service.me(t) for t in forged))

        assert statuses == [401] * 10
        assert reloads == 1

    async def test_picked_up_right_after_the_host_booted(
        self,
        make_auth_app: AuthAppFactory,
        own_settings: Settings,
        own_db: Sessions,
        passwords: Passwords,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # time.monotonic() counts from boot: a replica started on a fresh VM reads small
        # values. The first forced reload must not wait for the clock to pass the interval.
        import aixiate_auth.resolver as resolver_module

        monkeypatch.setattr(resolver_module, "time", FakeClock(5.0))
        app = make_auth_app(own_settings, AuthSettings(_env_file=None, key_reload_seconds=60))
        async with running_service(app, own_db, passwords) as service:
            token, _ = await self.token_from_another_process(service, own_db, own_settings)

            assert await service.me(token) == 200
