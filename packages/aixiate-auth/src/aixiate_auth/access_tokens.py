"""Access tokens: short-lived ES256 JWTs that any JOSE library verifies from the JWKS.

Decoding trusts nothing in the token's header but ``kid``, looked up among our own
keys: ``jku``/``x5u``/``jwk`` cannot supply a key, ``alg`` is pinned, unknown ``crit``
extensions are rejected by joserfc, and every required claim must be present.
"""

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


class KeyLookup:
    """The key resolver joserfc calls with the token's header."""

    def __init__(self, find: Callable[[str], ECKey | None]) -> None:
        self.find = find
        self.unknown_kid: str | None = None

    def __call__(self, obj: Any) -> ECKey:
        headers = obj.headers()
        kid = headers.get("kid")
        if not isinstance(kid, str):
            raise TokenRejected("missing_kid")
        key = self.find(kid)
        if key is None:
            self.unknown_kid = kid
            raise TokenRejected("unknown_kid")
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
        return AccessClaims(
            user_id=UUID(claims["sub"]),
            session_id=UUID(claims["sid"]),
            roles=frozenset(roles),
            token_id=str(claims["jti"]),
            expires_at=int(claims["exp"]),
        )
    except TokenRejected:
        raise
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise TokenRejected(type(exc).__name__) from exc
