"""The tamper-evident chain: what an event's hash covers, and how a chain is checked.

Every event carries ``seq`` (1, 2, 3, ... without gaps), the previous event's hash and
its own: SHA-256 over a canonical JSON of its content fields and ``prev_hash``. Changing
a field breaks that event's hash; deleting or inserting an event breaks the ``seq``
run or the link to the previous hash. Appending is serialized (see
:func:`aixiate_audit.models.append_to_chain`), so two events never claim one link.

The chain proves that nothing was changed *inside* it. Someone who can write to the
database and knows this algorithm can rebuild a whole forged tail; keep the last
verified ``head_hash`` somewhere else (a ticket, a log shipped off the host) to anchor
it. Pruning removes the oldest events: verification then starts at the oldest kept
event and trusts its ``prev_hash``.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from uuid import UUID

GENESIS_HASH = "0" * 64
#: ``pg_advisory_xact_lock`` key serializing appends ("aixaudit" in ASCII).
APPEND_LOCK_KEY = 0x6169786175646974

Problem = Literal["hash_mismatch", "seq_gap", "seq_duplicate", "prev_hash_mismatch"]


class ChainedEvent(Protocol):
    """What the hash covers: an ``AuditEvent``, or a row read from its table."""

    @property
    def id(self) -> UUID: ...
    @property
    def seq(self) -> int: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def event_type(self) -> str: ...
    @property
    def actor_id(self) -> UUID | None: ...
    @property
    def target_type(self) -> str | None: ...
    @property
    def target_id(self) -> str | None: ...
    @property
    def ip(self) -> str | None: ...
    @property
    def user_agent(self) -> str | None: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def success(self) -> bool: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def data(self) -> Mapping[str, Any]: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def hash(self) -> str: ...


def _timestamp(value: datetime) -> str:
    # Microseconds, UTC, fixed width: what PostgreSQL and SQLite both store exactly.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_content(event: ChainedEvent) -> bytes:
    """The bytes the hash covers: sorted keys, no whitespace, UTF-8."""
    content = {
        "id": str(event.id),
        "seq": event.seq,
        "occurred_at": _timestamp(event.occurred_at),
        "event_type": event.event_type,
        "actor_id": None if event.actor_id is None else str(event.actor_id),
        "target_type": event.target_type,
        "target_id": event.target_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "request_id": event.request_id,
        "success": event.success,
        "reason": event.reason,
        "data": event.data,
        "prev_hash": event.prev_hash,
    }
    text = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode()


def compute_hash(event: ChainedEvent) -> str:
    return hashlib.sha256(canonical_content(event)).hexdigest()


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of checking the chain from its oldest kept event on."""

    ok: bool
    checked: int
    first_bad_id: UUID | None = None
    problem: Problem | None = None
    #: The newest event checked: record it elsewhere to anchor the chain.
    head_seq: int | None = None
    head_hash: str | None = None


class ChainChecker:
    """Feeds events in ``seq`` order; remembers only the previous one (constant memory)."""

    def __init__(self) -> None:
        self.checked = 0
        self._prev_seq: int | None = None
        self._prev_hash: str | None = None
        self.failure: tuple[UUID, Problem] | None = None

    def check(self, event: ChainedEvent) -> bool:
        """False (and :attr:`failure` set) at the first event that breaks the chain."""
        self.checked += 1
        problem: Problem | None = None
        if self._prev_seq is not None:
            if event.seq == self._prev_seq:
                problem = "seq_duplicate"
            elif event.seq != self._prev_seq + 1:
                problem = "seq_gap"
            elif event.prev_hash != self._prev_hash:
                problem = "prev_hash_mismatch"
        if problem is None and compute_hash(event) != event.hash:
            problem = "hash_mismatch"
        if problem is not None:
            self.failure = (event.id, problem)
            return False
        self._prev_seq, self._prev_hash = event.seq, event.hash
        return True

    def result(self) -> Verification:
        if self.failure is not None:
            return Verification(
                ok=False,
                checked=self.checked,
                first_bad_id=self.failure[0],
                problem=self.failure[1],
            )
        return Verification(
            ok=True, checked=self.checked, head_seq=self._prev_seq, head_hash=self._prev_hash
        )
