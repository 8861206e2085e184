"""Opaque handles: random strings handed to a client that stand for a record in the
shared store (a step-up login, the state of a provider flow, an exchange code).

The store keeps each record under the handle's SHA-256, so a dump of Redis holds no
usable handle; every replica can read it; it expires on its own. :meth:`Handles.take`
is the single use: of concurrent takes of one handle exactly one gets the record.
"""

import json
from collections.abc import Mapping
from typing import Any

from aixiate_core.crypto import new_token, token_digest
from aixiate_core.store import KeyValueStore


class Handles:
    def __init__(self, store: KeyValueStore, namespace: str, *, ttl_seconds: float) -> None:
        self.store = store
        self.namespace = namespace
        self.ttl_seconds = ttl_seconds

    def key(self, raw: str) -> str:
        return f"{self.namespace}:{token_digest(raw)}"

    async def put(self, payload: Mapping[str, Any]) -> str:
        """A new handle for ``payload``."""
        raw = new_token()
        await self.store.set(self.key(raw), json.dumps(payload).encode(), ttl=self.ttl_seconds)
        return raw

    async def peek(self, raw: str) -> dict[str, Any] | None:
        value = await self.store.get(self.key(raw))
        if not value:
            return None
        payload: dict[str, Any] = json.loads(value)
        return payload

    async def take(self, raw: str) -> dict[str, Any] | None:
        """The record, removed; None when unknown, expired, or taken by someone else."""
        payload = await self.peek(raw)
        if payload is None or not await self.claim(raw):
            return None
        return payload

    async def claim(self, raw: str) -> bool:
        """Removes the record; True for the one caller that removed it."""
        return await self.store.delete(self.key(raw)) == 1
