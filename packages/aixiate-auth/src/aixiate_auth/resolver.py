"""aixiate-auth's implementation of core's ``PrincipalResolver``: who is calling.

Signature and claims come from the in-memory key ring, session liveness from the shared
store, the database only on a store miss. Every request checks liveness, so a logout or
revocation takes effect at once everywhere.
"""

import time
from uuid import UUID

import structlog
from aixiate_core.db import utc_now
from aixiate_core.errors import InvalidToken
from aixiate_core.security import Principal
from aixiate_core.store import KeyValueStore
from aixiate_users import snapshots
from fastapi import Request
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth.access_tokens import (
    AccessClaims,
    KeyLookup,
    TokenRejected,
    VerifiedTokens,
    claims_registry,
    decode_access_token,
)
from aixiate_auth.keys import KeyRing
from aixiate_auth.liveness import Liveness
from aixiate_auth.repository import SessionRepository
from aixiate_auth.services.sessions import check_live
from aixiate_auth.settings import AuthSettings

log = structlog.get_logger()

# Sessions remembered as recently touched; cleared wholesale when full (a bounded memo,
# not a cache: forgetting only costs one store round trip).
_TOUCH_MEMO_MAX = 100_000


class TokenResolver:
    def __init__(
        self,
        *,
        settings: AuthSettings,
        keyring: KeyRing,
        liveness: Liveness,
        store: KeyValueStore,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        self.settings = settings
        self.keyring = keyring
        self.liveness = liveness
        self.store = store
        self.sessionmaker = sessionmaker
        self.registry = claims_registry(settings)
        # -inf, not 0: monotonic time counts from boot, and on a freshly booted host the
        # first forced reload must not wait for it to pass key_reload_seconds.
        self._last_forced_reload = float("-inf")
        self._touched: dict[UUID, float] = {}
        self._verified = VerifiedTokens(
            settings.access_token_cache_size,
            settings.jwt_leeway_seconds,
            has_key=lambda kid: keyring.verification_key(kid) is not None,
        )

    async def __call__(self, request: Request, token: str) -> Principal:
        await self.keyring.reload_if_stale()
        claims = await self._decode(token)
        # One round trip for both facts a typical request needs: is the session live, and
        # the caller's user snapshot (handed to users' GET /me through request.state).
        live, snapshot = await self.liveness.is_live_with(
            claims.session_id, snapshots.key(claims.user_id)
        )
        snapshots.hand_over(request, claims.user_id, snapshot)
        if live is None:
            async with self.sessionmaker() as db:
                live = await check_live(db, self.liveness, claims.session_id)
        if not live:
            raise InvalidToken("The session of this token has ended.")
        await self._touch(claims.session_id)
        return Principal(
            user_id=claims.user_id,
            session_id=claims.session_id,
            roles=claims.roles,
            amr=claims.amr,
        )

    async def _decode(self, token: str) -> AccessClaims:
        claims = self._verified.get(token)
        if claims is not None:
            return claims
        lookup = KeyLookup(self.keyring.verification_key)
        try:
            claims = decode_access_token(token, lookup, self.registry)
        except TokenRejected as exc:
            if exc.reason == "unknown_kid" and self._may_force_reload():
                # A key rotated on another replica: reload once, then judge again.
                await self.keyring.reload()
                lookup = KeyLookup(self.keyring.verification_key)
                try:
                    claims = decode_access_token(token, lookup, self.registry)
                except TokenRejected as again:
                    exc = again
            if claims is None:
                log.info("auth.token.rejected", reason=exc.reason)
                raise InvalidToken() from None
        assert lookup.kid is not None  # a verified token named one of our keys
        self._verified.put(token, claims, lookup.kid)
        return claims

    def _may_force_reload(self) -> bool:
        now = time.monotonic()
        if now - self._last_forced_reload < self.settings.key_reload_seconds:
            return False
        self._last_forced_reload = now
        return True

    async def _touch(self, session_id: UUID) -> None:
        # last_used_at is written at most once per interval per session, not per request:
        # a local memo skips the shared store on most requests, the store's SET NX
        # keeps replicas from writing the same minute twice.
        now = time.monotonic()
        interval = self.settings.session_touch_interval_seconds
        if now - self._touched.get(session_id, -interval) < interval:
            return
        if len(self._touched) > _TOUCH_MEMO_MAX:
            self._touched.clear()
        self._touched[session_id] = now
        key = f"auth:touch:{session_id}"
        if await self.store.set_if_absent(key, b"1", ttl=interval):
            async with self.sessionmaker() as db, db.begin():
                await SessionRepository(db).touch(session_id, utc_now())
