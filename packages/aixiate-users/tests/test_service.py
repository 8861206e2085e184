from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import bcrypt
import pytest
from aixiate_audit.models import AuditEvent
from aixiate_core.db import utc_now
from aixiate_core.email import EmailMessage
from aixiate_core.events import DomainEvents
from aixiate_core.outbox import Outbox, OutboxEmail
from aixiate_core.pagination import Cursor
from aixiate_core.security import Principal
from aixiate_core.testing.mail import link_token
from aixiate_users import action_tokens as tokens
from aixiate_users import service as users_service
from aixiate_users.action_tokens import TokenPurpose
from aixiate_users.errors import (
    CannotModifySelf,
    EmailTaken,
    EmailUnchanged,
    InvalidActionToken,
    InvalidCursor,
    InvalidPassword,
    WeakPassword,
)
from aixiate_users.events import (
    UserDeactivated,
    UserDeleted,
    UserEmailChanged,
    UserRolesChanged,
)
from aixiate_users.models import ActionToken, User
from aixiate_users.passwords import Passwords
from aixiate_users.repository import UserRepository, escape_like
from aixiate_users.schemas import (
    AdminUserCreate,
    AdminUserUpdate,
    EmailChangeRequest,
    PasswordConfirmation,
    UserListQuery,
    UserUpdate,
)
from aixiate_users.settings import UsersSettings
from aixiate_users.testing import PASSWORD, UserFactory, audit_events, create_user
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession


def own_sessions(session: AsyncSession) -> async_sessionmaker[AsyncSession]:
    """What services commit failure events with: sessions on the test's connection, each
    in a savepoint of its rolled-back transaction, so ``session`` sees their events."""
    return async_sessionmaker(
        bind=session.bind,
        class_=AsyncSession,
        join_transaction_mode="create_savepoint",
        expire_on_commit=False,
    )


async def confirm(session: AsyncSession, token: str, events: DomainEvents) -> User:
    return await users_service.confirm_email_change(
        session, token, events=events, sessionmaker=own_sessions(session)
    )


async def tokens_of(session: AsyncSession, user: User) -> list[ActionToken]:
    statement = select(ActionToken).where(col(ActionToken.user_id) == user.id)
    return list((await session.exec(statement)).all())


_started: list[datetime] = []


@pytest.fixture(autouse=True)
def _test_started() -> Iterator[None]:
    # The run's database is shared with suites that commit; look only at this test's rows.
    _started.append(utc_now())
    yield
    _started.pop()


type Queued = Callable[[], Awaitable[list[EmailMessage]]]


@pytest.fixture
def queued(session: AsyncSession, outbox: Outbox) -> Queued:
    """``await queued()``: the emails this test queued, opened."""

    async def read() -> list[EmailMessage]:
        statement = select(OutboxEmail).where(col(OutboxEmail.created_at) >= _started[-1])
        rows = (await session.exec(statement)).all()
        return [outbox.open(row) for row in rows]

    return read


def admin_principal(user: User) -> Principal:
    return Principal(user_id=user.id, session_id=uuid4(), roles=frozenset(user.roles))


def about_user(event: AuditEvent) -> tuple[UUID | None, str | None, str | None]:
    """Who acted on which target: ``(actor_id, target_type, target_id)``."""
    return event.actor_id, event.target_type, event.target_id


class TestUpdateMe:
    async def test_changes_the_name_and_records_it(self, session: AsyncSession) -> None:
        user = await create_user(session, full_name="Old")

        await users_service.update_me(session, user, UserUpdate(full_name="New"))

        assert user.full_name == "New"
        [event] = await audit_events(session, "user.updated")
        assert event.actor_id == user.id
        assert event.data == {"fields": ["full_name"]}

    async def test_nothing_to_change_records_nothing(self, session: AsyncSession) -> None:
        user = await create_user(session, full_name="Same")

        await users_service.update_me(session, user, UserUpdate(full_name="Same"))
        await users_service.update_me(session, user, UserUpdate())

        assert await audit_events(session, "user.updated") == []

    async def test_null_clears_the_name(self, session: AsyncSession) -> None:
        user = await create_user(session, full_name="Someone")

        await users_service.update_me(session, user, UserUpdate(full_name=None))

        assert user.full_name is None


type ChangeEmail = Callable[..., Awaitable[None]]


@pytest.fixture
def change_email(
    session: AsyncSession, passwords: Passwords, outbox: Outbox, users_settings: UsersSettings
) -> ChangeEmail:
    """``change_email(user, new_email, password=PASSWORD, settings=users_settings)``: the
    service's email change request, as the route makes it."""

    async def request(
        user: User,
        new_email: str,
        *,
        password: str = PASSWORD,
        settings: UsersSettings = users_settings,
    ) -> None:
        await users_service.request_email_change(
            session,
            user,
            EmailChangeRequest(new_email=new_email, password=password),
            passwords=passwords,
            outbox=outbox,
            settings=settings,
            sessionmaker=own_sessions(session),
        )

    return request


class TestRequestEmailChange:
    async def test_free_address_gets_a_link_and_the_old_one_a_notice(
        self, session: AsyncSession, account: UserFactory, queued: Queued, change_email: ChangeEmail
    ) -> None:
        user = await account(email="old@example.com")

        await change_email(user, "New.Address@Example.com")

        messages = {message.to: message for message in await queued()}
        assert set(messages) == {"new.address@example.com", "old@example.com"}
        confirm = messages["new.address@example.com"]
        assert confirm.tags == {"template": "email_change_confirm"}
        assert "https://app.example.com/confirm-email?token=" in confirm.text
        assert "24 hours" in confirm.text
        notice = messages["old@example.com"]
        assert notice.tags == {"template": "email_change_notice"}
        assert "n***@e***.com" in notice.text
        assert "new.address@example.com" not in notice.text
        assert user.email == "old@example.com"  # nothing changes before the click
        [token] = await tokens_of(session, user)
        assert token.purpose == TokenPurpose.CHANGE_EMAIL
        assert token.data == {"new_email": "new.address@example.com"}
        assert token.token_hash != link_token(confirm.text)
        assert abs(token.expires_at - (utc_now() + timedelta(days=1))) < timedelta(minutes=1)
        [event] = await audit_events(session, "user.email.change_requested")
        assert event.actor_id == user.id
        assert event.target_id == str(user.id)

    async def test_link_lifetime_follows_the_setting(
        self, session: AsyncSession, account: UserFactory, queued: Queued, change_email: ChangeEmail
    ) -> None:
        user = await account()
        short = UsersSettings(email_verification_ttl_seconds=2 * 3600, _env_file=None)

        await change_email(user, "elsewhere@example.com", settings=short)

        [token] = await tokens_of(session, user)
        assert abs(token.expires_at - (utc_now() + timedelta(hours=2))) < timedelta(minutes=1)
        confirm = next(m for m in await queued() if m.to == "elsewhere@example.com")
        assert "2 hours" in confirm.text

    async def test_taken_address_gets_a_notice_and_no_link(
        self, session: AsyncSession, account: UserFactory, queued: Queued, change_email: ChangeEmail
    ) -> None:
        user = await account(email="mine@example.com")
        await create_user(session, email="taken@example.com", full_name="Owner")

        await change_email(user, "TAKEN@example.com")

        messages = {message.to: message for message in await queued()}
        assert set(messages) == {"taken@example.com", "mine@example.com"}
        assert messages["taken@example.com"].tags == {"template": "email_change_taken"}
        assert "Hello Owner" in messages["taken@example.com"].text
        assert "token=" not in messages["taken@example.com"].text
        # The requester's own mailbox sees exactly what a free address would show.
        assert messages["mine@example.com"].tags == {"template": "email_change_notice"}
        assert await tokens_of(session, user) == []

    async def test_wrong_password_is_refused(
        self, session: AsyncSession, account: UserFactory, queued: Queued, change_email: ChangeEmail
    ) -> None:
        user = await account()
        user_id = user.id
        await session.commit()  # as a request finds it: the refusal rolls back its own work

        with pytest.raises(InvalidPassword):
            await change_email(user, "new@example.com", password="not the password")

        assert await queued() == []
        assert await audit_events(session, "user.email.change_requested") == []
        [event] = await audit_events(session, "user.email.change_request.failed")
        assert about_user(event) == (user_id, "user", str(user_id))
        assert (event.success, event.reason, event.data) == (False, "bad_password", {})

    @pytest.mark.parametrize(
        ("columns", "address", "refusal"),
        [
            ({"password_hash": None}, "new@example.com", InvalidPassword),
            ({"email": "same@example.com"}, "Same@Example.com", EmailUnchanged),
        ],
        ids=["account_without_password", "current_address"],
    )
    async def test_is_refused(
        self,
        account: UserFactory,
        change_email: ChangeEmail,
        columns: dict[str, Any],
        address: str,
        refusal: type[Exception],
    ) -> None:
        user = await account(**columns)

        with pytest.raises(refusal):
            await change_email(user, address)

    async def test_outdated_hash_is_upgraded(
        self, session: AsyncSession, passwords: Passwords, change_email: ChangeEmail
    ) -> None:
        # bcrypt: a legacy scheme, accepted once and upgraded to argon2id.
        legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        user = await create_user(session, password_hash=legacy)

        await change_email(user, "upgraded@example.com")

        assert user.password_hash is not None
        assert user.password_hash.startswith("$argon2id$")
        assert (await passwords.verify(PASSWORD, user.password_hash)).valid


class TestConfirmEmailChange:
    async def issue(self, session: AsyncSession, user: User, new_email: str, **kw: Any) -> str:
        return await tokens.issue(
            session,
            user_id=user.id,
            purpose=TokenPurpose.CHANGE_EMAIL,
            ttl=kw.get("ttl", timedelta(hours=1)),
            data={"new_email": new_email},
        )

    async def test_sets_the_verified_address(
        self, session: AsyncSession, events: DomainEvents, published: list[object]
    ) -> None:
        user = await create_user(session, email="before@example.com", is_verified=False)
        token = await self.issue(session, user, "after@example.com")

        confirmed = await confirm(session, token, events)

        assert confirmed is user
        assert (user.email, user.is_verified) == ("after@example.com", True)
        assert published == [UserEmailChanged(user_id=user.id)]
        [event] = await audit_events(session, "user.email.changed")
        assert about_user(event) == (user.id, "user", str(user.id))
        assert event.data == {"old_email": "b***@e***.com", "new_email": "a***@e***.com"}

    async def refusals(self, session: AsyncSession) -> list[tuple[UUID | None, str | None]]:
        """(actor, reason) of every refused confirmation, oldest first; never a token."""
        events = await audit_events(session, "user.email.change.failed")
        for event in events:
            assert event.success is False
            assert event.target_id == (str(event.actor_id) if event.actor_id else None)
            assert event.data == {}
        return [(e.actor_id, e.reason) for e in sorted(events, key=lambda e: e.seq or 0)]

    async def test_token_works_once(self, session: AsyncSession, events: DomainEvents) -> None:
        user = await create_user(session)
        user_id = user.id
        token = await self.issue(session, user, "once@example.com")
        await confirm(session, token, events)
        await session.commit()  # the first request's work is committed

        with pytest.raises(InvalidActionToken):
            await confirm(session, token, events)

        assert await self.refusals(session) == [(user_id, "used")]
        assert len(await audit_events(session, "user.email.changed")) == 1

    @pytest.mark.parametrize("purpose", [TokenPurpose.VERIFY_EMAIL, TokenPurpose.RESET_PASSWORD])
    async def test_token_of_another_purpose_is_refused(
        self, session: AsyncSession, events: DomainEvents, purpose: TokenPurpose
    ) -> None:
        user = await create_user(session)
        user_id = user.id
        token = await tokens.issue(
            session,
            user_id=user.id,
            purpose=purpose,
            ttl=timedelta(hours=1),
            data={"new_email": "x@example.com"},
        )
        await session.commit()

        with pytest.raises(InvalidActionToken):
            await confirm(session, token, events)

        assert await self.refusals(session) == [(user_id, "wrong_purpose")]

    async def test_unknown_and_expired_tokens_are_refused(
        self, session: AsyncSession, events: DomainEvents
    ) -> None:
        user = await create_user(session)
        user_id = user.id
        expired = await self.issue(session, user, "late@example.com", ttl=timedelta(seconds=-1))
        await session.commit()

        for token in (expired, "no-such-token", ""):
            with pytest.raises(InvalidActionToken):
                await confirm(session, token, events)

        stored = await session.get(User, user_id)
        assert stored is not None
        assert stored.email != "late@example.com"
        assert await self.refusals(session) == [
            (user_id, "expired"),
            (None, "unknown_token"),
            (None, "unknown_token"),
        ]

    async def test_deactivated_account_cannot_confirm(
        self, session: AsyncSession, events: DomainEvents
    ) -> None:
        user = await create_user(session, is_active=False)
        user_id = user.id
        token = await self.issue(session, user, "inactive@example.com")
        await session.commit()

        with pytest.raises(InvalidActionToken):
            await confirm(session, token, events)

        assert await self.refusals(session) == [(user_id, "inactive")]
        # The refusal rolled back the consumption: nothing about the token changed.
        [action] = (
            await session.exec(select(ActionToken).where(col(ActionToken.user_id) == user_id))
        ).all()
        assert action.used_at is None

    async def test_token_without_an_address_is_refused(
        self, session: AsyncSession, events: DomainEvents
    ) -> None:
        user = await create_user(session)
        user_id = user.id
        token = await tokens.issue(
            session, user_id=user.id, purpose=TokenPurpose.CHANGE_EMAIL, ttl=timedelta(hours=1)
        )
        await session.commit()

        with pytest.raises(InvalidActionToken):
            await confirm(session, token, events)

        assert await self.refusals(session) == [(user_id, "malformed_token")]

    async def test_address_taken_meanwhile_is_a_conflict(
        self, session: AsyncSession, events: DomainEvents, published: list[object]
    ) -> None:
        user = await create_user(session, email="first@example.com")
        token = await self.issue(session, user, "wanted@example.com")
        await create_user(session, email="wanted@example.com")

        with pytest.raises(EmailTaken):
            await confirm(session, token, events)
        assert published == []

    async def test_unique_index_race_is_a_conflict_not_a_crash(
        self, session: AsyncSession, events: DomainEvents, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        user = await create_user(session, email="racer@example.com")
        token = await self.issue(session, user, "contested@example.com")
        other = await create_user(session, email="contested@example.com")
        # The other request commits between our check and our write.
        monkeypatch.setattr(UserRepository, "get_by_email", _never_found)

        with pytest.raises(EmailTaken):
            await confirm(session, token, events)

        # Only the savepoint rolled back: the transaction still works.
        assert await session.get(User, other.id) is not None
        await session.refresh(user)
        assert user.email == "racer@example.com"

    async def test_links_sent_to_the_old_address_stop_working(
        self, session: AsyncSession, events: DomainEvents
    ) -> None:
        user = await create_user(session)
        reset = await tokens.issue(
            session, user_id=user.id, purpose=TokenPurpose.RESET_PASSWORD, ttl=timedelta(hours=1)
        )
        token = await self.issue(session, user, "moved@example.com")

        await confirm(session, token, events)

        assert await tokens.consume(session, reset, TokenPurpose.RESET_PASSWORD) is None


async def _never_found(_self: UserRepository, _email: str) -> None:
    return None


class TestDeleteMe:
    async def test_deletes_after_telling_subscribers(
        self, session: AsyncSession, passwords: Passwords, account: UserFactory
    ) -> None:
        user = await account()
        user_id = user.id
        await tokens.issue(
            session, user_id=user_id, purpose=TokenPurpose.VERIFY_EMAIL, ttl=timedelta(hours=1)
        )
        seen: list[bool] = []

        async def on_deleted(db: AsyncSession, event: UserDeleted) -> None:
            # Subscribers run in the same transaction and still find the user.
            found = await db.exec(select(User).where(col(User.id) == event.user_id))
            seen.append(found.first() is not None)

        bus = DomainEvents()
        bus.subscribe(UserDeleted, on_deleted)

        await users_service.delete_me(
            session,
            user,
            PasswordConfirmation(password=PASSWORD),
            passwords=passwords,
            events=bus,
            sessionmaker=own_sessions(session),
        )

        assert seen == [True]
        session.expunge_all()
        assert await session.get(User, user_id) is None
        remaining = await session.exec(
            select(ActionToken).where(col(ActionToken.user_id) == user_id)
        )
        assert remaining.all() == []
        [event] = await audit_events(session, "user.deleted")
        assert about_user(event) == (user_id, "user", str(user_id))

    async def test_wrong_password_deletes_nothing(
        self,
        session: AsyncSession,
        passwords: Passwords,
        account: UserFactory,
        events: DomainEvents,
    ) -> None:
        user = await account()
        user_id = user.id
        await session.commit()  # as a request finds it: the refusal rolls back its own work

        with pytest.raises(InvalidPassword):
            await users_service.delete_me(
                session,
                user,
                PasswordConfirmation(password=PASSWORD + "!"),
                passwords=passwords,
                events=events,
                sessionmaker=own_sessions(session),
            )

        assert await session.get(User, user_id) is not None
        assert await audit_events(session, "user.deleted") == []
        [event] = await audit_events(session, "user.delete.failed")
        assert about_user(event) == (user_id, "user", str(user_id))
        assert (event.success, event.reason) == (False, "bad_password")


async def admin_creates(
    session: AsyncSession, passwords: Passwords, admin: User, **body: Any
) -> User:
    """``admin`` creates a user through the service, from an ``AdminUserCreate`` of ``body``."""
    return await users_service.create_user(
        session, AdminUserCreate(**body), admin=admin_principal(admin), passwords=passwords
    )


class TestAdminCreate:
    async def test_creates_a_user_with_a_hashed_password(
        self, session: AsyncSession, passwords: Passwords
    ) -> None:
        admin = await create_user(session, roles=["admin"])

        user = await admin_creates(
            session,
            passwords,
            admin,
            email="Created@Example.com",
            password=PASSWORD,
            full_name="Created",
            roles=["support", "support", "billing:read"],
            is_verified=True,
        )

        assert user.email == "created@example.com"
        assert user.roles == ["support", "billing:read"]
        assert user.is_verified is True
        assert user.password_hash is not None
        assert PASSWORD not in user.password_hash
        assert (await passwords.verify(PASSWORD, user.password_hash)).valid
        assert user.password_changed_at is not None
        [event] = await audit_events(session, "admin.user.created")
        assert about_user(event) == (admin.id, "user", str(user.id))
        assert PASSWORD not in str(event.data)

    async def test_existing_address_is_a_conflict(
        self, session: AsyncSession, passwords: Passwords
    ) -> None:
        admin = await create_user(session, roles=["admin"])
        await create_user(session, email="exists@example.com")

        with pytest.raises(EmailTaken):
            await admin_creates(
                session, passwords, admin, email="EXISTS@example.com", password=PASSWORD
            )

    async def test_unique_index_race_is_a_conflict(
        self,
        session: AsyncSession,
        passwords: Passwords,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        admin = await create_user(session, roles=["admin"])
        await create_user(session, email="race@example.com")
        monkeypatch.setattr(UserRepository, "get_by_email", _never_found)

        with pytest.raises(EmailTaken):
            await admin_creates(
                session, passwords, admin, email="race@example.com", password=PASSWORD
            )
        assert await audit_events(session, "admin.user.created") == []
        assert await session.get(User, admin.id) is not None

    async def test_password_policy_applies(
        self, session: AsyncSession, passwords: Passwords
    ) -> None:
        admin = await create_user(session, roles=["admin"])

        with pytest.raises(WeakPassword):
            await admin_creates(
                session, passwords, admin, email="weak@example.com", password="short"
            )


class TestAdminUpdate:
    async def update(
        self,
        session: AsyncSession,
        user: User,
        admin: User,
        events: DomainEvents,
        **changes: Any,
    ) -> User:
        return await users_service.update_user(
            session,
            user,
            AdminUserUpdate.model_validate(changes),
            admin=admin_principal(admin),
            events=events,
        )

    async def test_records_the_changed_fields(
        self, session: AsyncSession, events: DomainEvents, published: list[object]
    ) -> None:
        admin = await create_user(session, roles=["admin"])
        user = await create_user(session, full_name="Before", is_verified=False)

        await self.update(
            session, user, admin, events, full_name="After", is_verified=True, is_active=True
        )

        assert (user.full_name, user.is_verified) == ("After", True)
        [event] = await audit_events(session, "admin.user.updated")
        assert about_user(event) == (admin.id, "user", str(user.id))
        assert event.data == {"fields": ["full_name", "is_verified"]}
        assert published == []

    async def test_role_change_is_published(
        self, session: AsyncSession, events: DomainEvents, published: list[object]
    ) -> None:
        admin = await create_user(session, roles=["admin"])
        user = await create_user(session, roles=["support"])

        await self.update(session, user, admin, events, roles=["support", "billing"])

        assert user.roles == ["support", "billing"]
        assert published == [
            UserRolesChanged(user_id=user.id, roles=frozenset({"support", "billing"}))
        ]
        [event] = await audit_events(session, "admin.user.updated")
        assert event.data == {"fields": ["roles"], "roles": ["support", "billing"]}

    async def test_deactivation_is_published(
        self, session: AsyncSession, events: DomainEvents, published: list[object]
    ) -> None:
        admin = await create_user(session, roles=["admin"])
        user = await create_user(session)

        await self.update(session, user, admin, events, is_active=False)
        await self.update(session, user, admin, events, is_active=True)

        assert published == [UserDeactivated(user_id=user.id)]
        assert len(await audit_events(session, "admin.user.updated")) == 2

    async def test_no_change_records_nothing(
        self, session: AsyncSession, events: DomainEvents, published: list[object]
    ) -> None:
        admin = await create_user(session, roles=["admin"])
        user = await create_user(session, roles=["support"])

        await self.update(session, user, admin, events, roles=["support"], is_active=True)

        assert published == []
        assert await audit_events(session, "admin.user.updated") == []

    @pytest.mark.parametrize(
        "changes",
        [{"is_active": False}, {"roles": []}, {"roles": ["support"]}],
        ids=["deactivate", "drop-all-roles", "drop-admin"],
    )
    async def test_admin_cannot_lock_themselves_out(
        self, session: AsyncSession, events: DomainEvents, changes: dict[str, Any]
    ) -> None:
        admin = await create_user(session, roles=["admin", "support"])

        with pytest.raises(CannotModifySelf):
            await self.update(session, admin, admin, events, **changes)
        assert admin.is_active
        assert admin.roles == ["admin", "support"]

    async def test_admin_may_change_the_rest_of_their_own_account(
        self, session: AsyncSession, events: DomainEvents
    ) -> None:
        admin = await create_user(session, roles=["admin"])

        await self.update(session, admin, admin, events, full_name="Me", roles=["admin", "ops"])

        assert (admin.full_name, admin.roles) == ("Me", ["admin", "ops"])


class TestAdminDelete:
    async def test_delete_publishes_and_keeps_the_audit_event(
        self, session: AsyncSession, events: DomainEvents, published: list[object]
    ) -> None:
        admin = await create_user(session, roles=["admin"])
        user = await create_user(session)
        user_id = user.id

        await users_service.delete_user(session, user, admin=admin_principal(admin), events=events)

        assert published == [UserDeleted(user_id=user_id)]
        session.expunge_all()
        assert await session.get(User, user_id) is None
        [event] = await audit_events(session, "admin.user.deleted")
        assert (event.actor_id, event.target_id) == (admin.id, str(user_id))

    async def test_admin_cannot_delete_themselves(
        self, session: AsyncSession, events: DomainEvents
    ) -> None:
        admin = await create_user(session, roles=["admin"])

        with pytest.raises(CannotModifySelf):
            await users_service.delete_user(
                session, admin, admin=admin_principal(admin), events=events
            )


async def all_pages(session: AsyncSession, limit: int, **filters: Any) -> list[list[UUID]]:
    pages: list[list[UUID]] = []
    cursor: str | None = None
    while True:
        page = await users_service.list_users(
            session, UserListQuery(limit=limit, cursor=cursor, **filters)
        )
        pages.append([user.id for user in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


class TestListUsers:
    async def test_pages_hold_each_user_once_newest_first(self, session: AsyncSession) -> None:
        tag = uuid4().hex[:8]
        base = utc_now()
        users = [
            await create_user(
                session, email=f"{tag}-{i}@example.com", created_at=base - timedelta(seconds=i)
            )
            for i in range(7)
        ]
        # Three users share one timestamp: the id breaks the tie.
        for user in users[4:]:
            user.created_at = base - timedelta(seconds=10)
        await session.flush()

        pages = await all_pages(session, 3, q=tag)

        assert [len(page) for page in pages] == [3, 3, 1]
        flat = [user_id for page in pages for user_id in page]
        assert len(set(flat)) == 7
        tied = sorted((u.id for u in users[4:]), reverse=True)
        assert flat == [u.id for u in users[:4]] + tied

    async def test_exact_multiple_of_the_limit_ends_without_an_empty_page(
        self, session: AsyncSession
    ) -> None:
        tag = uuid4().hex[:8]
        for i in range(4):
            await create_user(session, email=f"{tag}-{i}@example.com")

        pages = await all_pages(session, 2, q=tag)

        assert [len(page) for page in pages] == [2, 2]

    async def test_filters_combine_with_paging(self, session: AsyncSession) -> None:
        tag = uuid4().hex[:8]
        expected = set()
        for i in range(9):
            roles = ["admin"] if i % 2 == 0 else ["admin:read"]
            user = await create_user(
                session, email=f"{tag}-{i}@example.com", roles=roles, is_active=i % 3 != 0
            )
            if roles == ["admin"] and user.is_active:
                expected.add(user.id)

        pages = await all_pages(session, 1, q=tag, role="admin", is_active=True)

        flat = [user_id for page in pages for user_id in page]
        assert len(flat) == len(expected) == 3
        assert set(flat) == expected

    async def test_role_filter_matches_whole_roles_only(self, session: AsyncSession) -> None:
        tag = uuid4().hex[:8]
        admin = await create_user(session, email=f"{tag}-a@example.com", roles=["ops", "admin"])
        await create_user(session, email=f"{tag}-b@example.com", roles=["admin:read", "xadmin"])
        await create_user(session, email=f"{tag}-c@example.com", roles=[])

        page = await users_service.list_users(session, UserListQuery(q=tag, role="admin"))

        assert [user.id for user in page.items] == [admin.id]

    @pytest.mark.parametrize("q", ["%", "_", "\\", "%_%", "a%"])
    async def test_wildcards_in_the_search_are_literal(self, session: AsyncSession, q: str) -> None:
        await create_user(session, email="plain@example.com", full_name="Plain Name")
        literal = await create_user(session, email="odd@example.com", full_name=f"Odd {q} Name")

        page = await users_service.list_users(session, UserListQuery(q=q))

        assert [user.id for user in page.items] == [literal.id]

    async def test_search_ignores_case_in_email_and_name(self, session: AsyncSession) -> None:
        tag = uuid4().hex[:8]
        by_email = await create_user(session, email=f"{tag}.mail@example.com", full_name="X")
        by_name = await create_user(session, full_name=f"Ms {tag.upper()} Name")
        await create_user(session, full_name="Unrelated")

        page = await users_service.list_users(session, UserListQuery(q=tag.upper()))

        assert {user.id for user in page.items} == {by_email.id, by_name.id}

    async def test_items_never_carry_the_password_hash(self, session: AsyncSession) -> None:
        tag = uuid4().hex[:8]
        await create_user(session, email=f"{tag}@example.com", password_hash="scrypt$secret$hash")

        page = await users_service.list_users(session, UserListQuery(q=tag))

        assert "password_hash" not in page.model_dump_json()
        assert "scrypt$secret$hash" not in page.model_dump_json()


class TestCursor:
    def test_round_trip(self) -> None:
        cursor = Cursor(at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), id=uuid4())

        assert Cursor.decode(cursor.encode()) == cursor

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "not base64!",
            "bm90IGpzb24",  # "not json"
            "W10",  # []
            "eyJjIjogMX0",  # {"c": 1}
            # {"c": "2026-01-01T00:00:00", "i": "..."} (no time zone)
            "eyJjIjogIjIwMjYtMDEtMDFUMDA6MDA6MDAiLCAiaSI6ICIwMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDAifQ",
            # {"c": "2026-01-01T00:00:00+00:00", "i": "nope"}
            "eyJjIjogIjIwMjYtMDEtMDFUMDA6MDA6MDArMDA6MDAiLCAiaSI6ICJub3BlIn0",
        ],
    )
    def test_malformed_cursors_are_refused(self, text: str) -> None:
        with pytest.raises(InvalidCursor):
            Cursor.decode(text)

    def test_escape_like(self) -> None:
        assert escape_like("50%_off\\") == "50\\%\\_off\\\\"


class TestMaskEmail:
    @pytest.mark.parametrize(
        ("email", "masked"),
        [
            ("alice@example.com", "a***@e***.com"),
            ("bob@mail.example.co.uk", "b***@m***.uk"),
            ("x@localhost", "x***@l***"),
        ],
    )
    def test_masks(self, email: str, masked: str) -> None:
        assert users_service.mask_email(email) == masked
