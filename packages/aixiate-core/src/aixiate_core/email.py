"""Outgoing email behind one ``send`` call: the log by default, Resend when configured."""

from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import httpx
import resend
import structlog
from fastapi import Depends, Request
from resend.exceptions import ResendError

from aixiate_core.settings import Settings

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class EmailMessage:
    to: str
    subject: str
    text: str
    html: str
    # The same key for every attempt at one message, so a retried send is delivered once.
    idempotency_key: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


class EmailDeliveryError(Exception):
    """The provider did not accept the message; ``retryable`` says whether trying again may."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class EmailSender(Protocol):
    async def send(self, message: EmailMessage) -> str | None:
        """Hands the message over; returns the provider's message id when there is one."""
        ...


class LogEmailSender:
    """Writes emails to the log, for development. Outside development only the envelope
    is logged, since bodies carry single-use links."""

    def __init__(self, sender: str, *, include_body: bool) -> None:
        self.sender = sender
        self.include_body = include_body

    async def send(self, message: EmailMessage) -> str | None:
        body: dict[str, Any] = {"text": message.text} if self.include_body else {}
        log.info(
            "email.logged",
            sender=self.sender,
            to=message.to,
            subject=message.subject,
            idempotency_key=message.idempotency_key,
            **body,
        )
        return None


class ResendEmailSender:
    """Sends through Resend's HTTP API with the SDK's async client.

    The SDK keeps its key and base URL in module globals, so one process talks to one
    Resend account; that matches one service per process.
    """

    def __init__(self, *, api_key: str, base_url: str, sender: str) -> None:
        resend.api_key = api_key
        resend.api_url = base_url
        self.sender = sender

    async def send(self, message: EmailMessage) -> str | None:
        params: resend.Emails.SendParams = {
            "from": self.sender,
            "to": [message.to],
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
        }
        if message.tags:
            params["tags"] = [{"name": k, "value": v} for k, v in message.tags.items()]
        options: resend.Emails.SendOptions = {}
        if message.idempotency_key:
            options["idempotency_key"] = message.idempotency_key
        try:
            response = await resend.Emails.send_async(params, options)
        except ResendError as exc:
            code = _status(exc)
            raise EmailDeliveryError(
                f"resend refused the message ({code})", retryable=code == 429 or code >= 500
            ) from exc
        except (httpx.HTTPError, OSError) as exc:
            raise EmailDeliveryError("resend could not be reached", retryable=True) from exc
        return str(response["id"])


def _status(exc: ResendError) -> int:
    try:
        return int(exc.code)
    except (TypeError, ValueError):
        return 500


def create_email_sender(settings: Settings) -> EmailSender:
    if settings.resend_api_key is not None:
        return ResendEmailSender(
            api_key=settings.resend_api_key.get_secret_value(),
            base_url=settings.resend_base_url,
            sender=settings.email_from,
        )
    return LogEmailSender(settings.email_from, include_body=settings.env != "production")


def get_email_sender(request: Request) -> EmailSender:
    sender: EmailSender = request.state.email_sender
    return sender


EmailSenderDep = Annotated[EmailSender, Depends(get_email_sender)]
