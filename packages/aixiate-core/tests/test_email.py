import dataclasses
from collections.abc import Callable

import pytest
import resend
import structlog
from aixiate_core.email import (
    EmailDeliveryError,
    EmailMessage,
    LogEmailSender,
    ResendEmailSender,
    create_email_sender,
)
from aixiate_core.settings import Settings
from aixiate_core.testing import FakeResend

SENDER = "Aixiate <no-reply@example.com>"
API_KEY = "re_test_0123456789"

MESSAGE = EmailMessage(
    to="ada@example.com",
    subject="Confirm your email",
    text="Open https://id.example.com/confirm?t=single-use-token",
    html='<a href="https://id.example.com/confirm?t=single-use-token">Confirm</a>',
    idempotency_key="confirm/ada/1",
)


@pytest.fixture(autouse=True)
def restore_resend_globals(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK keeps its key and URL in module globals; put them back after each test.
    monkeypatch.setattr(resend, "api_key", resend.api_key)
    monkeypatch.setattr(resend, "api_url", resend.api_url)


def resend_sender(url: str) -> ResendEmailSender:
    return ResendEmailSender(api_key=API_KEY, base_url=url, sender=SENDER)


class TestLogEmailSender:
    async def test_logs_the_message(self) -> None:
        sender = LogEmailSender(SENDER, include_body=True)

        with structlog.testing.capture_logs() as logs:
            message_id = await sender.send(MESSAGE)

        assert message_id is None
        assert logs == [
            {
                "event": "email.logged",
                "log_level": "info",
                "sender": SENDER,
                "to": MESSAGE.to,
                "subject": MESSAGE.subject,
                "idempotency_key": MESSAGE.idempotency_key,
                "text": MESSAGE.text,
            }
        ]

    async def test_envelope_only_keeps_links_out_of_logs(self) -> None:
        sender = LogEmailSender(SENDER, include_body=False)

        with structlog.testing.capture_logs() as logs:
            await sender.send(MESSAGE)

        assert len(logs) == 1
        assert logs[0]["to"] == MESSAGE.to
        assert "single-use-token" not in repr(logs)


class TestResendEmailSender:
    async def test_delivers_the_message(self, fake_resend: FakeResend) -> None:
        message_id = await resend_sender(fake_resend.url).send(MESSAGE)

        assert len(fake_resend.calls) == 1
        call = fake_resend.calls[0]
        assert call.path == "/emails"
        assert call.body == {
            "from": SENDER,
            "to": [MESSAGE.to],
            "subject": MESSAGE.subject,
            "text": MESSAGE.text,
            "html": MESSAGE.html,
        }
        assert message_id is not None
        assert message_id  # the fake's id, handed back to the caller

    async def test_authenticates_with_the_api_key(self, fake_resend: FakeResend) -> None:
        await resend_sender(fake_resend.url).send(MESSAGE)

        assert fake_resend.calls[0].headers["authorization"] == f"Bearer {API_KEY}"

    async def test_sends_the_idempotency_key(self, fake_resend: FakeResend) -> None:
        await resend_sender(fake_resend.url).send(MESSAGE)

        assert fake_resend.calls[0].headers["idempotency-key"] == "confirm/ada/1"

    async def test_no_idempotency_key_when_none_given(self, fake_resend: FakeResend) -> None:
        await resend_sender(fake_resend.url).send(
            EmailMessage(to="ada@example.com", subject="Hi", text="Hi", html="<p>Hi</p>")
        )

        assert "idempotency-key" not in fake_resend.calls[0].headers

    async def test_sends_tags(self, fake_resend: FakeResend) -> None:
        tagged = EmailMessage(
            to="ada@example.com", subject="Hi", text="Hi", html="<p>Hi</p>", tags={"kind": "x"}
        )

        await resend_sender(fake_resend.url).send(tagged)

        assert fake_resend.emails[0]["tags"] == [{"name": "kind", "value": "x"}]

    async def test_returns_the_provider_id(self, fake_resend: FakeResend) -> None:
        other = dataclasses.replace(MESSAGE, idempotency_key="another-key")
        first = await resend_sender(fake_resend.url).send(MESSAGE)
        second = await resend_sender(fake_resend.url).send(other)

        assert first
        assert second
        assert first != second

    async def test_a_retried_message_is_delivered_once(self, fake_resend: FakeResend) -> None:
        first = await resend_sender(fake_resend.url).send(MESSAGE)
        again = await resend_sender(fake_resend.url).send(MESSAGE)

        assert first == again
        assert len(fake_resend.emails) == 1

    @pytest.mark.parametrize(
        ("status", "retryable"),
        [
            pytest.param(500, True, id="server-error"),
            pytest.param(503, True, id="unavailable"),
            pytest.param(429, True, id="rate-limited"),
            pytest.param(422, False, id="invalid-message"),
            pytest.param(403, False, id="bad-key"),
        ],
    )
    async def test_refusal(self, fake_resend: FakeResend, status: int, retryable: bool) -> None:
        fake_resend.fail_next(1, status=status)

        with pytest.raises(EmailDeliveryError) as caught:
            await resend_sender(fake_resend.url).send(MESSAGE)

        assert caught.value.retryable is retryable
        assert fake_resend.emails == []

    async def test_retry_after_failure_is_delivered(self, fake_resend: FakeResend) -> None:
        sender = resend_sender(fake_resend.url)
        fake_resend.fail_next(1, status=500)

        with pytest.raises(EmailDeliveryError):
            await sender.send(MESSAGE)
        await sender.send(MESSAGE)

        assert [call.status for call in fake_resend.calls] == [500, 200]
        keys = {call.headers["idempotency-key"] for call in fake_resend.calls}
        assert keys == {"confirm/ada/1"}

    async def test_unreachable_is_retryable(self, free_port: Callable[[], int]) -> None:
        sender = resend_sender(f"http://127.0.0.1:{free_port()}")

        with pytest.raises(EmailDeliveryError) as caught:
            await sender.send(MESSAGE)

        assert caught.value.retryable is True


class TestFakeResend:
    async def test_fails_only_the_next_n(self, fake_resend: FakeResend) -> None:
        sender = resend_sender(fake_resend.url)
        fake_resend.fail_next(2, status=500)

        outcomes = []
        for _ in range(3):
            try:
                await sender.send(MESSAGE)
            except EmailDeliveryError:
                outcomes.append("failed")
            else:
                outcomes.append("sent")

        assert outcomes == ["failed", "failed", "sent"]
        assert len(fake_resend.emails) == 1


class TestCreateEmailSender:
    def test_log_sender_without_resend_key(self) -> None:
        sender = create_email_sender(
            Settings(_env_file=None, env="development", resend_api_key=None)
        )

        assert isinstance(sender, LogEmailSender)
        assert sender.include_body is True

    def test_production_log_sender_omits_bodies(self) -> None:
        sender = create_email_sender(
            Settings(_env_file=None, env="production", resend_api_key=None)
        )

        assert isinstance(sender, LogEmailSender)
        assert sender.include_body is False

    def test_resend_sender_with_key(self, fake_resend: FakeResend) -> None:
        sender = create_email_sender(
            Settings(
                _env_file=None,
                resend_api_key=API_KEY,
                resend_base_url=fake_resend.url + "/",
                email_from=SENDER,
            )
        )

        assert isinstance(sender, ResendEmailSender)
        assert sender.sender == SENDER
        assert resend.api_url == fake_resend.url
