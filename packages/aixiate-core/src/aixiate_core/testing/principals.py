"""A stand-in for auth's token resolver, for packages below auth (users, audit) and core.

They protect routes with core's ``CurrentPrincipal`` but cannot import auth, so their
tests mint bearer strings that map to principals; real tokens are auth's to test.
"""

from collections.abc import Iterable
from uuid import UUID, uuid4

from fastapi import Request

from aixiate_core.errors import InvalidToken
from aixiate_core.security import Principal


class MintedTokens:
    """A ``PrincipalResolver`` that knows the bearer strings :meth:`mint` made, and no other."""

    def __init__(self) -> None:
        self.principals: dict[str, Principal] = {}

    async def __call__(self, request: Request, token: str) -> Principal:
        principal = self.principals.get(token)
        if principal is None:
            raise InvalidToken()
        return principal

    def mint(self, user_id: UUID | None = None, roles: Iterable[str] = ()) -> dict[str, str]:
        """Headers with a bearer token of a new session of ``user_id`` (a new id if None)."""
        token = f"test-{uuid4().hex}"
        self.principals[token] = Principal(
            user_id=user_id or uuid4(), session_id=uuid4(), roles=frozenset(roles)
        )
        return {"Authorization": f"Bearer {token}"}
