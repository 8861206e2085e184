"""Access tokens: short-lived ES256 JWTs that any JOSE library verifies from the JWKS.

Decoding trusts nothing in the token's header but ``kid``, looked up among our own
keys: ``jku``/``x5u``/``jwk`` cannot supply a key, ``alg`` is pinned, unknown ``crit``
extensions are rejected by joserfc, and every required claim must be present.
"""

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from joserfc.jwt import JWTClaimsRegistry

from aixiate_auth.keys import ALGORITHM, ALGORITHMS
from aixiate_auth.settings import AuthSettings

ACCESS_TYPE = "access"


class TokenRejected(Exception):
    """The token is not one of ours, or no longer valid. ``reason`` is for logs only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: UUID
    session_id: UUID
    roles: frozenset[str]
    token_id: str
    expires_at: int
    #: RFC 8176 authentication methods of the session's login.
    amr: frozenset[str] = frozenset()


class KeyLookup:
    """The key resolver joserfc calls with the token's header."""

    def __init__(self, find: Callable[[str], ECKey | None]) -> None:
        self.find = find
        self.unknown_kid: str | None = None
        #: The kid of the key that was handed out, once joserfc has asked for it.
        self.kid: str | None = None

    def __call__(self, obj: Any) -> ECKey:
        headers = obj.headers()
        kid = headers.get("kid")
        if not isinstance(kid, str):
            raise TokenRejected("missing_kid")
        key = self.find(kid)
        if key is None:
            self.unknown_kid = kid
            raise TokenRejected("unknown_kid")
        self.kid = kid
        return key


def claims_registry(
    settings: AuthSettings, now: Callable[[], int] | None = None
) -> JWTClaimsRegistry:
    return JWTClaimsRegistry(
        now=now,
        leeway=settings.jwt_leeway_seconds,
        iss={"essential": True, "value": settings.issuer},
        aud={"essential": True, "value": settings.audience},
        sub={"essential": True},
        sid={"essential": True},
        jti={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        typ={"essential": True, "value": ACCESS_TYPE},
    )


def encode_access_token(
    settings: AuthSettings,
    *,
    kid: str,
    key: ECKey,
    user_id: UUID,
    session_id: UUID,
    roles: Iterable[str],
    amr: Iterable[str],
    now: int | None = None,
) -> tuple[str, int]:
    """The token and its ``exp``."""
    issued = int(now if now is not None else time.time())
    expires = issued + settings.access_token_ttl_seconds
    claims = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": str(user_id),
        "sid": str(session_id),
        "iat": issued,
        "nbf": issued,
        "exp": expires,
        "jti": uuid.uuid4().hex,
        "typ": ACCESS_TYPE,
        "roles": sorted(set(roles)),
        "amr": list(amr),
    }
    token = jwt.encode({"alg": ALGORITHM, "kid": kid}, claims, key, algorithms=ALGORITHMS)
    return token, expires


def decode_access_token(token: str, lookup: KeyLookup, registry: JWTClaimsRegistry) -> AccessClaims:
    try:
        decoded = jwt.decode(token, lookup, algorithms=ALGORITHMS)
        claims = decoded.claims
        registry.validate(claims)
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise TokenRejected("bad_roles")
        amr = claims.get("amr", [])
        if not isinstance(amr, list) or not all(isinstance(m, str) for m in amr):
            raise TokenRejected("bad_amr")
        return AccessClaims(
            user_id=UUID(claims["sub"]),
            session_id=UUID(claims["sid"]),
            roles=frozenset(roles),
            token_id=str(claims["jti"]),
            expires_at=int(claims["exp"]),
            amr=frozenset(amr),
        )
    except TokenRejected:
        raise
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise TokenRejected(type(exc).__name__) from exc


class VerifiedTokens:
    """A bounded memo of access tokens whose signature and claims have already passed.

    A client sends the same access token with every request until it expires, and
    checking its ES256 signature and claims again each time is about a fifth of the CPU
    of an authenticated read. Entries are keyed by the token's SHA-256 (no token is kept
    in memory), and a hit still requires the token to be unexpired (with the leeway) and
    its key to still be one of ours, so the memo never admits a token that a full check
    would refuse. Session liveness is not memoized: it is checked on every request.
    """

    def __init__(
        self,
        max_entries: int,
        leeway: int,
        *,
        has_key: Callable[[str], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_entries = max_entries
        self.leeway = leeway
        self.has_key = has_key
        self.clock = clock
        self._entries: dict[bytes, tuple[AccessClaims, str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str) -> AccessClaims | None:
        if self.max_entries <= 0:
            return None
        key = self._key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        claims, kid = entry
        if claims.expires_at < self.clock() - self.leeway or not self.has_key(kid):
            del self._entries[key]
            return None
        return claims

    def put(self, token: str, claims: AccessClaims, kid: str) -> None:
        if self.max_entries <= 0:
            return
        if len(self._entries) >= self.max_entries:
            # Oldest first (dicts keep insertion order): the soonest to expire anyway.
            del self._entries[next(iter(self._entries))]
        self._entries[self._key(token)] = (claims, kid)
