"""The "ceiling" for ``GET /api/v1/users/me``: the least a FastAPI app must do to answer it.

It verifies the bearer token exactly as the service does (ES256 only, ``kid`` looked up
among the keys of the running service's JWKS, the same essential claims, values and
leeway) and answers a constant user JSON (by default the body the service returned for
the bench user). No database, no Redis, no middleware, no logging: what the service
achieves relative to this is the cost of everything else it does.

Served the way the service is: uvicorn, one worker, uvloop, httptools, no access log::

    python bench/ceiling_app.py --port 8001 --jwks-url http://127.0.0.1:8000/.well-known/jwks.json
"""

import argparse
import json
import os
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import urlsplit
from uuid import UUID

import uvicorn
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import OAuth2PasswordBearer
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from joserfc.jwt import JWTClaimsRegistry

ALGORITHMS = ["ES256"]

DEFAULT_USER: dict[str, Any] = {
    "id": "00000000-0000-4000-8000-000000000000",
    "email": "bench-me@example.com",
    "full_name": "Bench User",
    "roles": [],
    "is_active": True,
    "is_verified": True,
    "mfa_enabled": False,
    "created_at": "2025-01-01T00:00:00Z",
    "updated_at": "2025-01-01T00:00:00Z",
}


class Verifier:
    def __init__(self, issuer: str, audience: str, leeway: int) -> None:
        self.keys: dict[str, ECKey] = {}
        self.registry = JWTClaimsRegistry(
            leeway=leeway,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            sub={"essential": True},
            sid={"essential": True},
            jti={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            typ={"essential": True, "value": "access"},
        )

    def load_jwks(self, url: str) -> None:
        if urlsplit(url).hostname not in {"127.0.0.1", "localhost"}:
            raise SystemExit(f"ceiling_app: refusing non-local JWKS URL {url!r}")
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - checked above
            jwks = json.load(response)
        self.keys = {
            jwk["kid"]: ECKey.import_key(jwk)
            for jwk in jwks["keys"]
            if jwk.get("kty") == "EC" and jwk.get("alg") in ALGORITHMS
        }
        if not self.keys:
            raise SystemExit(f"ceiling_app: no ES256 key in {url}")

    def _key(self, obj: Any) -> ECKey:
        kid = obj.headers().get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise JoseError("unknown kid")
        return key

    def verify(self, token: str) -> tuple[UUID, UUID]:
        try:
            claims = jwt.decode(token, self._key, algorithms=ALGORITHMS).claims
            self.registry.validate(claims)
            roles = claims.get("roles", [])
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise ValueError("bad roles")
            return UUID(claims["sub"]), UUID(claims["sid"])
        except (JoseError, ValueError, TypeError, KeyError):
            raise _invalid_token() from None


def _invalid_token() -> HTTPException:
    return HTTPException(
        status_code=401,
        detail="invalid token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def create_app(jwks_url: str, user: dict[str, Any]) -> FastAPI:
    verifier = Verifier(
        issuer=os.environ.get("AIXIATE_ISSUER", "aixiate"),
        audience=os.environ.get("AIXIATE_AUDIENCE", "aixiate-api"),
        leeway=int(os.environ.get("AIXIATE_JWT_LEEWAY_SECONDS", "30")),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        verifier.load_jwks(jwks_url)
        yield

    app = FastAPI(title="Aixiate bench ceiling", lifespan=lifespan)
    bearer = OAuth2PasswordBearer(tokenUrl="/token", auto_error=False)

    async def current_user_id(token: Annotated[str | None, Depends(bearer)]) -> UUID:
        if not token:
            raise _invalid_token()
        user_id, _session_id = verifier.verify(token)
        return user_id

    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/users/me")
    async def read_me(_user_id: Annotated[UUID, Depends(current_user_id)]) -> dict[str, Any]:
        return user

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="The bench ceiling app for /users/me.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwks-url", required=True, help="the running service's JWKS")
    parser.add_argument(
        "--user-json", default=os.environ.get("BENCH_CEILING_USER_JSON"), help="the body to answer"
    )
    args = parser.parse_args()
    if args.host not in {"127.0.0.1", "localhost"}:
        raise SystemExit("ceiling_app: binds 127.0.0.1 only")
    user = json.loads(args.user_json) if args.user_json else DEFAULT_USER
    uvicorn.run(
        create_app(args.jwks_url, user),
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
