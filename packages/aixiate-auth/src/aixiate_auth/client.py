"""Verifying Aixiate access tokens in another service, from the JWKS alone.

    from aixiate_auth.client import JWKSTokenVerifier

    verifier = JWKSTokenVerifier("https://id.example.com/.well-known/jwks.json",
                                 issuer="aixiate", audience="aixiate-api")

    @app.get("/orders")
    async def orders(principal: Annotated[Principal, Depends(verifier.principal)]): ...

    @app.delete("/orders/{id}")
    async def delete(principal: Annotated[Principal, Depends(verifier.require("admin"))]): ...

    @app.post("/payouts")
    async def payout(principal: Annotated[Principal, Depends(verifier.require_mfa)]): ...

``Principal.amr`` is the token's RFC 8176 ``amr``; ``require_mfa`` (and ``require(role,
mfa=True)``) admit only tokens of a login with a second factor (403 ``mfa_required``).

No database is needed. The key set is fetched on first use, kept for ``cache_seconds``,
and fetched again early when a token names an unknown ``kid`` (at most once per
``min_refetch_seconds``, so a flood of forged kids cannot turn into a flood of fetches).

What this side cannot see: a token's session being revoked. Such a token keeps passing
here until it expires (access tokens live 15 minutes by default); the Aixiate service
itself rejects it at once.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import httpx
import structlog
from aixiate_core.errors import InvalidToken, MfaRequired, NotAuthenticated, ServiceUnavailable
from aixiate_core.security import Principal, check_role
from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from joserfc.jwk import KeySet

from aixiate_auth.access_tokens import (
    KeyLookup,
    TokenRejected,
    claims_registry,
    decode_access_token,
)
from aixiate_auth.keys import ALGORITHM
from aixiate_auth.settings import AuthSettings

log = structlog.get_logger()

_bearer = HTTPBearer(auto_error=False)


class JWKSTokenVerifier:
    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str = "aixiate",
        audience: str = "aixiate-api",
        leeway_seconds: int = 30,
        cache_seconds: float = 300.0,
        min_refetch_seconds: float = 30.0,
        timeout_seconds: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.jwks_url = jwks_url
        settings = AuthSettings.model_construct(
            issuer=issuer, audience=audience, jwt_leeway_seconds=leeway_seconds
        )
        self.registry = claims_registry(settings)
        self.cache_seconds = cache_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self._client = client or httpx.AsyncClient(timeout=timeout_seconds)
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        #: FastAPI dependency: a caller whose login had a second factor (403
        #: ``mfa_required`` otherwise).
        self.require_mfa = self._requiring_mfa()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def verify(self, token: str) -> Principal:
        """The caller's Principal; raises core ``InvalidToken`` (401) when rejected."""
        if time.monotonic() - self._fetched_at > self.cache_seconds:
            await self._fetch(force=False)
        try:
            return self._decode(token)
        except TokenRejected as exc:
            if exc.reason != "unknown_kid" or not await self._fetch(force=True):
                raise InvalidToken() from None
        try:
            return self._decode(token)
        except TokenRejected:
            raise InvalidToken() from None

    def _decode(self, token: str) -> Principal:
        claims = decode_access_token(token, KeyLookup(self._keys.get), self.registry)
        return Principal(
            user_id=claims.user_id,
            session_id=claims.session_id,
            roles=claims.roles,
            amr=claims.amr,
        )

    async def _fetch(self, *, force: bool) -> bool:
        """Fetches the key set; False when a forced fetch was refused as too soon."""
        async with self._lock:
            since = time.monotonic() - self._fetched_at
            if force and since < self.min_refetch_seconds:
                return False
            if not force and since <= self.cache_seconds:
                return True  # another task fetched while we waited for the lock
            try:
                response = await self._client.get(self.jwks_url)
                response.raise_for_status()
                keyset = KeySet.import_key_set(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("auth.jwks.fetch_failed", url=self.jwks_url, error=type(exc).__name__)
                if not self._keys:
                    raise ServiceUnavailable("The token issuer's keys cannot be fetched.") from exc
                return False
            self._keys = {
                str(key.kid): key
                for key in keyset.keys
                if key.kid and key.get("alg", ALGORITHM) == ALGORITHM
            }
            self._fetched_at = time.monotonic()
            return True

    async def principal(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        """FastAPI dependency: the authenticated caller (401 problem otherwise)."""
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise NotAuthenticated()
        return await self.verify(credentials.credentials)

    def _requiring_mfa(self) -> Callable[..., Awaitable[Principal]]:
        async def require_mfa(
            principal: Annotated[Principal, Depends(self.principal)],
        ) -> Principal:
            if not principal.used_mfa:
                raise MfaRequired()
            return principal

        return require_mfa

    def require(self, role: str, *, mfa: bool = False) -> Callable[..., Awaitable[Principal]]:
        """FastAPI dependency: a caller holding ``role`` (403 ``forbidden`` otherwise),
        and with ``mfa`` whose login had a second factor (403 ``mfa_required``)."""

        async def dependency(
            principal: Annotated[Principal, Depends(self.principal)],
        ) -> Principal:
            check_role(principal, role, frozenset({role}) if mfa else frozenset())
            return principal

        return dependency
