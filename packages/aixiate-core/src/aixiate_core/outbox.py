"""Email that loses nothing: a transactional outbox and the dispatcher that drains it.

A message is rendered and written to ``email_outbox`` in the same transaction as the
change that causes it, so a rolled-back registration sends nothing and a committed one
always sends. The dispatcher claims due rows with a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so replicas never claim the same row), sends them with a per-message
idempotency key, and retries transient failures with exponential backoff until a final
``failed`` state. A dispatcher killed mid-send leaves its rows leased; once the lease
expires another run re-sends them with the same idempotency key, which the provider
deduplicates, so nothing is lost and nothing is delivered twice.

Bodies carry single-use links, so they are stored encrypted and wiped once sent. The
templates they are rendered from belong to the packages that send them
(:mod:`aixiate_core.email_templates`).
"""

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID, uuid4

import structlog
from fastapi import Depends, Request
from sqlalchemy import LargeBinary, and_, delete, event, or_, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import Field, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_core.crypto import DecryptionError, SecretBox
from aixiate_core.db import TableBase, UTCDateTime, utc_now
from aixiate_core.email import EmailDeliveryError, EmailMessage, EmailSender
from aixiate_core.email_templates import EmailTemplates
from aixiate_core.events import DomainEvents, EmailDeliveryFailed
from aixiate_core.settings import Settings

log = structlog.get_logger()


class OutboxEmail(TableBase, table=True):
    __tablename__ = "email_outbox"

    template: str = Field(max_length=64)
    status: str = Field(default="pending", max_length=16, index=True)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime, index=True)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    idempotency_key: str = Field(default_factory=lambda: uuid4().hex, max_length=64, unique=True)
    # Encrypted JSON of the whole message (recipient, subject, bodies); None once sent.
    payload: bytes | None = Field(default=None, sa_type=LargeBinary)
    provider_id: str | None = Field(default=None, max_length=128)
    last_error: str | None = Field(default=None, max_length=255)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Outbox:
    """What request code uses: ``await outbox.enqueue(session, to=..., template=...)``.

    Without ``templates`` it only opens what was queued, which is all the dispatcher (and
    a test reading the queue) needs; opening takes the secret key alone.
    """

    def __init__(self, settings: Settings, templates: EmailTemplates | None = None) -> None:
        self.templates = templates
        self._globals = {"product_name": settings.product_name, "public_url": settings.public_url}
        self.box = SecretBox(settings.secret(), "email-outbox")
        self.public_url = settings.public_url
        self.wakeup = asyncio.Event()

    def link(self, path: str, token: str) -> str:
        """A front-end link carrying a token (`{public_url}/{path}?token=...`)."""
        return f"{self.public_url}/{path}?token={token}"

    async def enqueue(
        self,
        session: AsyncSession,
        *,
        to: str,
        template: str,
        context: Mapping[str, Any] | None = None,
    ) -> OutboxEmail:
        if self.templates is None:
            raise RuntimeError("this Outbox was built without email templates; it only opens")
        subject, text, html = self.templates.render(template, {**self._globals, **(context or {})})
        payload = json.dumps({"to": to, "subject": subject, "text": text, "html": html})
        row = OutboxEmail(template=template, payload=self.box.seal(payload.encode()))
        session.add(row)
        await session.flush()
        # Wake the in-process dispatcher once this transaction is committed.
        event.listen(session.sync_session, "after_commit", self._wake, once=True)
        return row

    def _wake(self, _session: object) -> None:
        self.wakeup.set()

    def open(self, row: OutboxEmail) -> EmailMessage:
        assert row.payload is not None
        data = json.loads(self.box.open(row.payload))
        return EmailMessage(
            to=data["to"],
            subject=data["subject"],
            text=data["text"],
            html=data["html"],
            idempotency_key=row.idempotency_key,
            tags={"template": row.template},
        )


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: UUID
    attempts: int


Clock = Callable[[], datetime]


class OutboxDispatcher:
    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        sender: EmailSender,
        outbox: Outbox,
        settings: Settings,
        events: DomainEvents | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.sender = sender
        self.outbox = outbox
        self.settings = settings
        self.events = events or DomainEvents()
        self.clock = clock

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Drains due messages until ``stop`` is set; waits between polls or wake-ups."""
        while not stop.is_set():
            try:
                sent = await self.run_once()
            except Exception:
                # A database outage must not kill the loop; it retries next poll.
                log.exception("outbox.dispatch_failed")
                sent = 0
            if sent:
                continue
            self.outbox.wakeup.clear()
            waiters = {
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self.outbox.wakeup.wait()),
            }
            _, pending = await asyncio.wait(
                waiters,
                timeout=self.settings.outbox_poll_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for waiter in pending:
                waiter.cancel()

    async def run_once(self) -> int:
        """Claims one batch and tries to send it; returns how many rows were claimed."""
        claimed = await self._claim()
        for item in claimed:
            await self._deliver(item)
        return len(claimed)

    async def _claim(self) -> list[_Claimed]:
        now = self.clock()
        due = or_(
            and_(col(OutboxEmail.status) == "pending", col(OutboxEmail.next_attempt_at) <= now),
            and_(col(OutboxEmail.status) == "sending", col(OutboxEmail.lease_until) < now),
        )
        candidates = (
            select(OutboxEmail.id)
            .where(due)
            .order_by(col(OutboxEmail.created_at))
            .limit(self.settings.outbox_batch_size)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(OutboxEmail)
            .where(col(OutboxEmail.id).in_(candidates.scalar_subquery()))
            .where(due)
            .values(
                status="sending",
                attempts=col(OutboxEmail.attempts) + 1,
                lease_until=now + timedelta(seconds=self.settings.outbox_lease_seconds),
                updated_at=now,
            )
            .returning(col(OutboxEmail.id), col(OutboxEmail.attempts))
        )
        async with self.sessionmaker() as session, session.begin():
            rows = (await session.exec(statement)).all()
        return [_Claimed(id=row[0], attempts=row[1]) for row in rows]

    async def _deliver(self, item: _Claimed) -> None:
        async with self.sessionmaker() as session:
            row = await session.get(OutboxEmail, item.id)
        if row is None or row.payload is None:
            return
        try:
            message = self.outbox.open(row)
        except DecryptionError:
            # Sealed under another secret key: no retry can ever open it.
            await self._failed(item, row.template, "undecryptable", retryable=False)
            return
        try:
            provider_id = await self.sender.send(message)
        except EmailDeliveryError as exc:
            await self._failed(item, row.template, str(exc), retryable=exc.retryable)
        except Exception as exc:
            log.exception("outbox.send_crashed", message_id=str(item.id))
            await self._failed(item, row.template, type(exc).__name__, retryable=True)
        else:
            await self._settle(
                item,
                status="sent",
                payload=None,
                provider_id=provider_id,
                sent_at=self.clock(),
                lease_until=None,
                last_error=None,
            )
            log.info("outbox.sent", message_id=str(item.id), template=row.template)

    async def _failed(self, item: _Claimed, template: str, reason: str, *, retryable: bool) -> None:
        if retryable and item.attempts < self.settings.outbox_max_attempts:
            delay = min(
                self.settings.outbox_backoff_base_seconds * 2 ** (item.attempts - 1),
                self.settings.outbox_backoff_max_seconds,
            )
            delay *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
            await self._settle(
                item,
                status="pending",
                next_attempt_at=self.clock() + timedelta(seconds=delay),
                lease_until=None,
                last_error=reason[:255],
            )
            log.warning(
                "outbox.retry_scheduled",
                message_id=str(item.id),
                attempts=item.attempts,
                delay_seconds=round(delay, 1),
                reason=reason,
            )
            return
        log.error("outbox.failed", message_id=str(item.id), attempts=item.attempts, reason=reason)
        async with self.sessionmaker() as session, session.begin():
            changed = await self._update(
                session,
                item,
                status="failed",
                payload=None,
                lease_until=None,
                last_error=reason[:255],
            )
            if changed:
                await self.events.publish(
                    session,
                    EmailDeliveryFailed(
                        message_id=item.id,
                        template=template,
                        attempts=item.attempts,
                        reason=reason[:100],
                    ),
                )

    async def _settle(self, item: _Claimed, **values: Any) -> None:
        async with self.sessionmaker() as session, session.begin():
            await self._update(session, item, **values)

    async def _update(self, session: AsyncSession, item: _Claimed, **values: Any) -> bool:
        # Fenced by the attempt number: a run whose lease expired and was re-claimed by
        # another dispatcher must not overwrite the newer claim's outcome.
        statement = (
            update(OutboxEmail)
            .where(col(OutboxEmail.id) == item.id)
            .where(col(OutboxEmail.status) == "sending")
            .where(col(OutboxEmail.attempts) == item.attempts)
            .values(updated_at=self.clock(), **values)
        )
        result = await session.exec(statement)
        return bool(result.rowcount)


def purge_job(retention: timedelta) -> Callable[[AsyncSession, datetime], Awaitable[int]]:
    """Housekeeping: delivered and failed rows older than ``retention`` go."""

    async def purge(session: AsyncSession, now: datetime) -> int:
        result = await session.exec(
            delete(OutboxEmail)
            .where(col(OutboxEmail.status).in_(("sent", "failed")))
            .where(col(OutboxEmail.updated_at) < now - retention)
        )
        return int(result.rowcount)

    return purge


def get_outbox(request: Request) -> Outbox:
    outbox: Outbox = request.state.outbox
    return outbox


OutboxDep = Annotated[Outbox, Depends(get_outbox)]
