"""What aixiate-auth holds while the app runs, and its implementation of core's
``PrincipalResolver``: signature and claims from the in-memory key ring, session
liveness from the shared store, the database only on a store miss."""

import time
from typing import Annotated
from uuid import UUID

import structlog
from aixiate_core.crypto import SecretBox
from aixiate_core.errors import InvalidToken
from aixiate_core.resources import State
from aixiate_core.security import Principal
from aixiate_users import snapshots
from fastapi import Depends, Request

from aixiate_auth import sessions
from aixiate_auth.access_tokens import (
    AccessClaims,
    KeyLookup,
    TokenRejected,
    VerifiedTokens,
    claims_registry,
    decode_access_token,
    encode_access_token,
)
from aixiate_auth.keys import KeyRing
from aixiate_auth.lockout import Lockout
from aixiate_auth.passwords import Argon2PasswordService
from aixiate_auth.settings import AuthSettings

log = structlog.get_logger()

# Sessions remembered as recently touched; cleared wholesale when full (a bounded memo,
# not a cache: forgetting only costs one store round trip).
_TOUCH_MEMO_MAX = 100_000


class AuthRuntime:
    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.passwords = Argon2PasswordService(settings)
        self.registry = claims_registry(settings)
        self._state: State | None = None
        self._keyring: KeyRing | None = None
        self._liveness: sessions.Liveness | None = None
        self._lockout: Lockout | None = None
        # -inf, not 0: monotonic time counts from boot, and on a freshly booted host the
        # first forced reload must not wait for it to pass key_reload_seconds.
        self._last_forced_reload = float("-inf")
        self._touched: dict[UUID, float] = {}
        self._verified = VerifiedTokens(
            settings.access_token_cache_size,
            settings.jwt_leeway_seconds,
            has_key=lambda kid: self.keyring.verification_key(kid) is not None,
        )

    async def start(self, state: State) -> None:
        box = SecretBox(state["settings"].secret(), "signing-keys")
        self._keyring = KeyRing(state["sessionmaker"], box, self.settings)
        await self._keyring.start()
        self._liveness = sessions.Liveness(state["store"], self.settings)
        secret = state["settings"].secret()
        self._lockout = Lockout(state["store"], self.settings, secret=secret)
        self._state = state

    def close(self) -> None:
        self.passwords.shutdown(wait=False)

    @property
    def state(self) -> State:
        if self._state is None:
            raise RuntimeError("the auth runtime has not been started")
        return self._state

    @property
    def keyring(self) -> KeyRing:
        if self._keyring is None:
            raise RuntimeError("the auth runtime has not been started")
        return self._keyring

    @property
    def liveness(self) -> sessions.Liveness:
        if self._liveness is None:
            raise RuntimeError("the auth runtime has not been started")
        return self._liveness

    @property
    def lockout(self) -> Lockout:
        if self._lockout is None:
            raise RuntimeError("the auth runtime has not been started")
        return self._lockout

    def issue_access_token(self, issued: sessions.Issued, roles: frozenset[str]) -> tuple[str, int]:
        key = self.keyring.signing_key()
        return encode_access_token(
            self.settings,
            kid=key.kid,
            key=key.key,
            user_id=issued.session.user_id,
            session_id=issued.session.id,
            roles=roles,
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
            async with self.state["sessionmaker"]() as db:
                live = await sessions.check_live(db, self.liveness, claims.session_id)
        if not live:
            raise InvalidToken("The session of this token has ended.")
        await self._touch(claims.session_id)
        return Principal(user_id=claims.user_id, session_id=claims.session_id, roles=claims.roles)

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
        if await self.state["store"].set_if_absent(key, b"1", ttl=interval):
            async with self.state["sessionmaker"]() as db, db.begin():
                await sessions.touch(db, session_id)


def get_runtime(request: Request) -> AuthRuntime:
    runtime: AuthRuntime = request.app.state.auth
    return runtime


RuntimeDep = Annotated[AuthRuntime, Depends(get_runtime)]
