"""Whether a session's access tokens may still be used, as every replica sees it at once.

The database is the record; the shared key-value store holds one flag per session, so
that checking a token costs no database round trip. Revocation marks the session revoked
in the store before the transaction commits (erring towards logging someone out, never
towards letting a revoked token through); a store miss falls back to the database and
refills the store.
"""

from collections.abc import Sequence
from uuid import UUID

from aixiate_core.store import KeyValueStore

from aixiate_auth.settings import AuthSettings

_LIVE = b"1"
_REVOKED = b"0"


class Liveness:
    def __init__(self, store: KeyValueStore, settings: AuthSettings) -> None:
        self.store = store
        # A revocation must be remembered for as long as any access token of the
        # session can still pass the signature and expiry checks.
        self.ttl = settings.access_token_ttl_seconds + settings.jwt_leeway_seconds

    @staticmethod
    def _key(session_id: UUID) -> str:
        return f"auth:session:{session_id}"

    async def is_live_with(self, session_id: UUID, other: str) -> tuple[bool | None, bytes | None]:
        """:meth:`is_live` and the value of another key, in one round trip."""
        value, other_value = await self.store.get_many(self._key(session_id), other)
        return (None if value is None else value == _LIVE), other_value

    async def is_live(self, session_id: UUID) -> bool | None:
        """True or False when the store knows; None on a miss."""
        value = await self.store.get(self._key(session_id))
        if value is None:
            return None
        return value == _LIVE

    async def mark_live(self, session_id: UUID, seconds_left: float) -> None:
        # Only where the store knows nothing: a revocation may have landed since the
        # caller read the session as live, and "revoked" must never be overwritten.
        await self.store.set_if_absent(
            self._key(session_id), _LIVE, ttl=max(1.0, min(self.ttl, seconds_left))
        )

    async def mark_revoked(self, session_ids: Sequence[UUID]) -> None:
        for session_id in session_ids:
            await self.store.set(self._key(session_id), _REVOKED, ttl=self.ttl)
