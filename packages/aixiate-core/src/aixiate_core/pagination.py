"""Keyset pagination cursors shared by every listing (users, audit events).

A cursor is where a page ends: the (timestamp, id) of its last row, opaque to clients.
Keyset pages stay exact while rows are added or removed between requests, and page
1000 costs what page 1 costs, unlike OFFSET.
"""

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from aixiate_core.errors import BadRequest


class InvalidCursor(BadRequest):
    code = "invalid_cursor"
    title = "Invalid cursor"
    default_detail = "The cursor is malformed; pass back a next_cursor exactly as received."


@dataclass(frozen=True, slots=True)
class Cursor:
    at: datetime
    id: UUID

    def encode(self) -> str:
        raw = json.dumps({"t": self.at.isoformat(), "i": str(self.id)}).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        """Raises :class:`InvalidCursor` for anything not made by :meth:`encode`."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            data = json.loads(raw)
            at = datetime.fromisoformat(data["t"])
            row_id = UUID(data["i"])
        except (binascii.Error, ValueError, TypeError, KeyError) as exc:
            raise InvalidCursor() from exc
        if at.tzinfo is None:
            raise InvalidCursor()
        return cls(at=at, id=row_id)
