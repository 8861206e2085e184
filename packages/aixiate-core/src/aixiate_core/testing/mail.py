"""The emails an app queued in its outbox, read back by a test.

Separate from the package's ``__init__``: it imports :mod:`aixiate_core.outbox`, which
defines a table, and the pytest plugin imports the package before any conftest.
"""

import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from uuid import UUID

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_core.email import EmailMessage
from aixiate_core.outbox import Outbox, OutboxEmail
from aixiate_core.settings import Settings

type SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]


def link_token(text: str, path: str = "") -> str:
    """The token of the first front-end link in ``text`` (to ``path``, when given)."""
    where = rf"/{path}\?" if path else r"[?&]"
    match = re.search(where + r"token=([A-Za-z0-9_\-]+)", text)
    assert match, f"no {path or 'token'} link in: {text}"
    return match.group(1)


@dataclass(frozen=True, slots=True)
class Mail:
    id: UUID
    template: str
    message: EmailMessage

    @property
    def text(self) -> str:
        return self.message.text

    @property
    def html(self) -> str:
        return self.message.html

    @property
    def token(self) -> str:
        """The token of the link in the message."""
        return link_token(self.message.text)


class Mailbox:
    """The messages waiting in an app's outbox, oldest first, opened as its dispatcher
    opens them: ``Outbox(settings)`` needs the app's secret key and nothing else.

    ``sessions`` opens the session to read in: the app's database for an app that commits,
    the test's own session (``lambda: nullcontext(session)``) for one that does not.
    """

    def __init__(self, settings: Settings, sessions: SessionFactory) -> None:
        self.outbox = Outbox(settings)
        self.sessions = sessions

    async def all(self) -> list[Mail]:
        statement = (
            select(OutboxEmail)
            .where(col(OutboxEmail.payload).is_not(None))
            .order_by(col(OutboxEmail.created_at))
        )
        async with self.sessions() as session:
            rows = (await session.exec(statement)).all()
        return [Mail(row.id, row.template, self.outbox.open(row)) for row in rows]

    async def messages(self) -> list[EmailMessage]:
        return [mail.message for mail in await self.all()]

    async def to(self, address: str, template: str | None = None) -> list[Mail]:
        """The messages to ``address`` (of ``template``, when given)."""
        return [
            mail
            for mail in await self.all()
            if mail.message.to == address and template in (None, mail.template)
        ]

    async def last(self, address: str, template: str) -> Mail:
        mails = await self.to(address, template)
        assert mails, f"no {template} email to {address}"
        return mails[-1]
