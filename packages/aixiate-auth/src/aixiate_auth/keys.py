"""Signing keys: created once, rotated on demand, published as a JWKS.

Every process keeps the keys in memory (verification is per request and must not touch
the database) and reloads them from the database periodically and whenever a token
names a ``kid`` it does not know, at most once per ``key_reload_seconds``, so a key
rotated on one replica is picked up by all of them.
"""

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from aixiate_core.crypto import SecretBox
from aixiate_core.db import utc_now
from joserfc.jwk import ECKey
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth.models import SigningKey
from aixiate_auth.repository import SigningKeyRepository
from aixiate_auth.settings import AuthSettings

log = structlog.get_logger()

#: The only algorithm we sign and accept. Pinned everywhere a token is decoded.
ALGORITHM = "ES256"
ALGORITHMS = [ALGORITHM]
_CURVE = "P-256"
_START_ATTEMPTS = 6
#: What the secret box that seals private keys is bound to.
_BOX_PURPOSE = "signing-keys"


def signing_key_box(secret: str) -> SecretBox:
    """The box that seals and opens the private halves, from ``AIXIATE_SECRET_KEY``."""
    return SecretBox(secret, _BOX_PURPOSE)


@dataclass(frozen=True, slots=True)
class LoadedKey:
    kid: str
    generation: int
    key: ECKey
    retired_at: datetime | None

    def public_jwk(self) -> dict[str, Any]:
        return public_jwk(self.key, self.kid)


def public_jwk(key: ECKey, kid: str) -> dict[str, Any]:
    return {**key.as_dict(private=False), "kid": kid, "alg": ALGORITHM, "use": "sig"}


def generate_key(box: SecretBox, generation: int) -> SigningKey:
    key = ECKey.generate_key(_CURVE, private=True)
    kid = key.thumbprint()  # RFC 7638: stable, derived from the public key
    private = json.dumps(key.as_dict(private=True)).encode()
    return SigningKey(
        kid=kid,
        generation=generation,
        algorithm=ALGORITHM,
        public_jwk=public_jwk(key, kid),
        private_key=box.seal(private),
    )


class KeyRing:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        box: SecretBox,
        settings: AuthSettings,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.box = box
        self.settings = settings
        self._keys: dict[str, LoadedKey] = {}
        self._signing: LoadedKey | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    def publish_window(self) -> timedelta:
        """How long a retired key must still verify: the longest-lived token it signed."""
        return timedelta(
            seconds=self.settings.access_token_ttl_seconds + self.settings.jwt_leeway_seconds
        )

    async def start(self) -> None:
        """Loads the keys, creating the first one when there is none (safe when several
        replicas start at once: the unique generation lets exactly one insert win)."""
        await self.reload()
        for attempt in range(_START_ATTEMPTS):
            if self._signing is not None:
                break
            try:
                await self._create_first_key()
            except OperationalError:
                # SQLite answers "database is locked" to a writer racing another one
                # instead of queueing it; try again once that writer is done.
                if attempt == _START_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
            await self.reload()
        if self._signing is None:
            raise RuntimeError("no active signing key after start-up")

    async def _create_first_key(self) -> None:
        async with self.sessionmaker() as session, session.begin():
            try:
                async with session.begin_nested():
                    await SigningKeyRepository(session).add(generate_key(self.box, generation=1))
            except IntegrityError:
                log.info("auth.keys.first_key_created_elsewhere")
            else:
                log.info("auth.keys.created", generation=1)

    async def reload(self) -> None:
        async with self._lock:
            since = utc_now() - self.publish_window()
            async with self.sessionmaker() as session:
                rows = await SigningKeyRepository(session).verifying(retired_after=since)
            keys = {row.kid: self._load(row) for row in rows}
            active = [k for k in keys.values() if k.retired_at is None]
            self._keys = keys
            self._signing = max(active, key=lambda k: k.generation) if active else None
            self._loaded_at = time.monotonic()

    def _load(self, row: SigningKey) -> LoadedKey:
        cached = self._keys.get(row.kid)
        if cached is not None:
            # Unsealing is the costly part; a key's private half never changes.
            return LoadedKey(row.kid, row.generation, cached.key, row.retired_at)
        private = json.loads(self.box.open(row.private_key))
        key = ECKey.import_key(private)
        return LoadedKey(row.kid, row.generation, key, row.retired_at)

    def signing_key(self) -> LoadedKey:
        if self._signing is None:
            raise RuntimeError("the key ring has not been started")
        return self._signing

    def verification_key(self, kid: str) -> ECKey | None:
        loaded = self._keys.get(kid)
        if loaded is None:
            return None
        if loaded.retired_at is not None and loaded.retired_at + self.publish_window() < utc_now():
            return None
        return loaded.key

    def is_stale(self) -> bool:
        return time.monotonic() - self._loaded_at > self.settings.key_reload_seconds

    async def reload_if_stale(self) -> bool:
        if not self.is_stale():
            return False
        await self.reload()
        return True

    def jwks(self) -> dict[str, Any]:
        cutoff = utc_now() - self.publish_window()
        return {
            "keys": [
                key.public_jwk()
                for key in sorted(self._keys.values(), key=lambda k: -k.generation)
                if key.retired_at is None or key.retired_at > cutoff
            ]
        }
