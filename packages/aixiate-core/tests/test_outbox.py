import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from aixiate_core.db import create_sessionmaker, utc_now
from aixiate_core.email import ResendEmailSender
from aixiate_core.email_templates import EmailTemplates
from aixiate_core.events import DomainEvents, EmailDeliveryFailed
from aixiate_core.outbox import Outbox, OutboxDispatcher, OutboxEmail
from aixiate_core.settings import Settings
from aixiate_core.testing import FakeResend
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession


class Clock:
    """Test-controlled time: backoff and leases elapse without sleeping."""

    def __init__(self) -> None:
        # A second ahead of the wall clock, so rows the test enqueues afterwards are due.
        self.now = utc_now() + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def outbox_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "outbox_max_attempts": 5,
            "outbox_backoff_base_seconds": 10.0,
            "outbox_lease_seconds": 60.0,
            "outbox_batch_size": 10,
        }
    )


@pytest.fixture
def outbox(outbox_settings: Settings, email_templates: EmailTemplates) -> Outbox:
    return Outbox(outbox_settings, email_templates)


@pytest.fixture
async def sessionmaker(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    maker = create_sessionmaker(engine)
    # These tests commit for real and count what a dispatcher claims: start and end with
    # an empty outbox, whatever other suites of this run left in the shared database.
    await _empty_outbox(maker)
    yield maker
    await _empty_outbox(maker)


async def _empty_outbox(maker: async_sessionmaker[AsyncSession]) -> None:
    async with maker() as session, session.begin():
        await session.exec(delete(OutboxEmail))


@dataclass
class Rig:
    """A committing outbox, the fake provider its dispatchers send to, and their settings."""

    fake: FakeResend
    sessionmaker: async_sessionmaker[AsyncSession]
    outbox: Outbox
    settings: Settings

    def dispatcher(
        self,
        clock: Callable[[], datetime],
        *,
        settings: Settings | None = None,
        events: DomainEvents | None = None,
    ) -> OutboxDispatcher:
        settings = settings or self.settings
        sender = ResendEmailSender(
            api_key="re_test", base_url=self.fake.url, sender=settings.email_from
        )
        return OutboxDispatcher(
            sessionmaker=self.sessionmaker,
            sender=sender,
            outbox=self.outbox,
            settings=settings,
            events=events,
            clock=clock,
        )

    async def enqueue(self, *, to: str = "ada@example.test") -> OutboxEmail:
        async with self.sessionmaker() as session, session.begin():
            return await self.outbox.enqueue(
                session,
                to=to,
                template="verify_email",
                context={
                    "name": "Ada",
                    "link": self.outbox.link("verify-email", "t0k3n"),
                    "expires_hours": 24,
                },
            )

    async def reload(self, row: OutboxEmail) -> OutboxEmail:
        async with self.sessionmaker() as session:
            found = await session.get(OutboxEmail, row.id)
            assert found is not None
            return found


@pytest.fixture
def rig(
    fake_resend: FakeResend,
    sessionmaker: async_sessionmaker[AsyncSession],
    outbox: Outbox,
    outbox_settings: Settings,
) -> Rig:
    return Rig(fake_resend, sessionmaker, outbox, outbox_settings)


async def enqueue_verification(
    session: AsyncSession, outbox: Outbox, to: str, *, name: str, token: str
) -> OutboxEmail:
    context = {"name": name, "link": outbox.link("verify-email", token), "expires_hours": 24}
    return await outbox.enqueue(session, to=to, template="verify_email", context=context)


class TestEnqueue:
    async def test_body_is_stored_encrypted(self, session: AsyncSession, outbox: Outbox) -> None:
        row = await enqueue_verification(
            session, outbox, "ada@example.test", name="Ada", token="s3cr3t"
        )

        assert row.payload is not None
        assert b"s3cr3t" not in row.payload
        assert b"ada@example.test" not in row.payload
        message = outbox.open(row)
        assert message.to == "ada@example.test"
        assert "verify-email?token=s3cr3t" in message.text
        assert message.idempotency_key == row.idempotency_key

    async def test_html_escapes_names_text_keeps_them(
        self, session: AsyncSession, outbox: Outbox
    ) -> None:
        name = "<script>alert(1)</script> Robert'); DROP TABLE users;--"
        row = await enqueue_verification(
            session, outbox, "bobby@example.test", name=name, token="x"
        )

        message = outbox.open(row)
        assert "<script>" not in message.html
        assert "&lt;script&gt;" in message.html
        assert name in message.text

    async def test_rolled_back_transaction_sends_nothing(
        self, engine: AsyncEngine, outbox: Outbox
    ) -> None:
        maker = create_sessionmaker(engine)
        async with maker() as session:
            row = await outbox.enqueue(
                session,
                to="gone@example.test",
                template="password_changed",
                context={"name": None},
            )
            await session.rollback()
        async with maker() as session:
            assert await session.get(OutboxEmail, row.id) is None

    async def test_without_templates_it_opens_but_does_not_write(
        self, session: AsyncSession, outbox: Outbox, outbox_settings: Settings
    ) -> None:
        row = await outbox.enqueue(
            session, to="ada@example.test", template="password_changed", context={"name": None}
        )
        reader = Outbox(outbox_settings)

        assert reader.open(row).to == "ada@example.test"
        with pytest.raises(RuntimeError, match="without email templates"):
            await reader.enqueue(session, to="ada@example.test", template="password_changed")

    async def test_links_use_the_public_url(self, outbox: Outbox, settings: Settings) -> None:
        assert (
            outbox.link("reset-password", "abc")
            == f"{settings.public_url}/reset-password?token=abc"
        )


class TestDispatcher:
    async def test_delivers_once_and_wipes_the_body(self, rig: Rig) -> None:
        dispatcher = rig.dispatcher(Clock())
        row = await rig.enqueue()

        assert await dispatcher.run_once() == 1
        assert await dispatcher.run_once() == 0
        sent = await rig.reload(row)
        assert (sent.status, sent.attempts, sent.payload) == ("sent", 1, None)
        assert sent.provider_id
        [email] = rig.fake.emails
        assert email["to"] == ["ada@example.test"]
        assert email["subject"].startswith("Confirm your email address")
        assert "verify-email?token=t0k3n" in email["text"]
        assert rig.fake.calls[0].headers["idempotency-key"] == row.idempotency_key

    async def test_retries_with_backoff_until_the_provider_recovers(self, rig: Rig) -> None:
        clock = Clock()
        dispatcher = rig.dispatcher(clock)
        rig.fake.fail_next(3, status=500)
        row = await rig.enqueue()
        delays = []

        for _ in range(3):
            assert await dispatcher.run_once() == 1
            pending = await rig.reload(row)
            assert pending.status == "pending"
            # Not due again before its backoff has passed.
            assert await dispatcher.run_once() == 0
            delays.append((pending.next_attempt_at - clock.now).total_seconds())
            clock.advance(delays[-1] + 1)
        assert await dispatcher.run_once() == 1

        sent = await rig.reload(row)
        assert (sent.status, sent.attempts) == ("sent", 4)
        assert len(rig.fake.emails) == 1
        assert delays[0] < delays[1] < delays[2]  # exponential, with jitter of +-20%
        assert {call.headers["idempotency-key"] for call in rig.fake.calls} == {row.idempotency_key}

    async def test_permanent_rejection_fails_at_once_and_is_announced(self, rig: Rig) -> None:
        announced: list[EmailDeliveryFailed] = []

        async def on_failed(_: AsyncSession, event: EmailDeliveryFailed) -> None:
            announced.append(event)

        events = DomainEvents()
        events.subscribe(EmailDeliveryFailed, on_failed)
        dispatcher = rig.dispatcher(Clock(), events=events)
        rig.fake.fail_next(1, status=422)
        row = await rig.enqueue()

        await dispatcher.run_once()

        failed = await rig.reload(row)
        assert (failed.status, failed.attempts, failed.payload) == ("failed", 1, None)
        assert [(e.message_id, e.template) for e in announced] == [(row.id, "verify_email")]

    async def test_gives_up_after_max_attempts(self, rig: Rig) -> None:
        clock = Clock()
        dispatcher = rig.dispatcher(clock)
        rig.fake.fail_next(100, status=503)
        row = await rig.enqueue()

        for _ in range(rig.settings.outbox_max_attempts):
            await dispatcher.run_once()
            clock.advance(rig.settings.outbox_backoff_max_seconds + 1)

        final = await rig.reload(row)
        assert (final.status, final.attempts) == ("failed", rig.settings.outbox_max_attempts)
        assert await dispatcher.run_once() == 0

    async def test_killed_mid_batch_loses_nothing_and_sends_nothing_twice(self, rig: Rig) -> None:
        clock = Clock()
        rows = [await rig.enqueue(to=f"u{i}@example.test") for i in range(5)]
        # The provider accepts the third message but the dispatcher dies before it
        # hears the answer: the worst moment to be killed.
        rig.fake.hold_after(3)
        task = asyncio.create_task(rig.dispatcher(clock).run_once())
        await rig.fake.wait_for_held()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        rig.fake.release()
        second = rig.dispatcher(clock)

        # Leased rows wait for the lease to run out, so a slow live dispatcher is not raced.
        assert await second.run_once() == 0
        clock.advance(rig.settings.outbox_lease_seconds + 1)
        assert await second.run_once() == 3
        statuses = [(await rig.reload(row)).status for row in rows]
        assert statuses == ["sent"] * 5
        delivered = rig.fake.delivered_keys
        assert sorted(delivered) == sorted(row.idempotency_key for row in rows)
        assert len(delivered) == len(set(delivered))

    async def test_concurrent_dispatchers_claim_each_message_once(self, rig: Rig) -> None:
        rows = [await rig.enqueue(to=f"c{i}@example.test") for i in range(30)]
        dispatchers = [rig.dispatcher(Clock()) for _ in range(3)]

        while sum(await asyncio.gather(*(d.run_once() for d in dispatchers))):
            pass

        attempts = [(await rig.reload(row)).attempts for row in rows]
        assert attempts == [1] * 30
        assert len(rig.fake.calls) == 30

    async def test_run_forever_wakes_on_commit_and_stops(self, rig: Rig) -> None:
        slow_poll = rig.settings.model_copy(update={"outbox_poll_seconds": 3600.0})
        dispatcher = rig.dispatcher(utc_now, settings=slow_poll)
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run_forever(stop))
        await asyncio.sleep(0.05)

        await rig.enqueue()
        async with asyncio.timeout(30):
            while not rig.fake.emails:  # noqa: ASYNC110 - the fake lives in a thread
                await asyncio.sleep(0.02)
        stop.set()
        async with asyncio.timeout(30):
            await task

        async with rig.sessionmaker() as session:
            statement = select(OutboxEmail).where(col(OutboxEmail.status) == "sent")
            assert len((await session.exec(statement)).all()) == 1
