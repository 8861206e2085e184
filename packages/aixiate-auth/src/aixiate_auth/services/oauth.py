"""Signing in with an external provider, and linking providers to accounts.

The browser goes to the provider with a single-use ``state`` (10 minutes) that holds the
PKCE verifier, the OIDC nonce and the front-end URL to return to; the callback checks
it, exchanges the code, verifies who the provider says the user is, and sends the
browser back with a one-time exchange code (60 seconds), never a token. The front end
posts that code to get tokens.

Identities are found by (provider, subject). An existing account with the provider's
address is never linked silently: the exchange answers ``link_required`` with a link
token, and the owner proves the account is theirs with its password (which counts
toward the lockout, as a login does). A signed-in user links a provider by starting the
flow from their session.
"""

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from aixiate_audit import service as audit_service
from aixiate_core.crypto import new_token, token_digest
from aixiate_core.db import end_read
from aixiate_core.errors import ServiceUnavailable
from aixiate_core.outbox import Outbox
from aixiate_core.security import Principal
from aixiate_users.models import User
from aixiate_users.passwords import Passwords
from aixiate_users.repository import UserRepository, normalize_email
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth.errors import (
    AccountInactive,
    AccountLocked,
    EmailNotVerified,
    IdentityNotFound,
    IdentityTaken,
    InvalidCredentials,
    InvalidExchangeCode,
    InvalidLinkToken,
    InvalidOAuthState,
    InvalidRedirectUri,
    LastCredential,
    LinkRequired,
    UnknownProvider,
)
from aixiate_auth.handles import Handles
from aixiate_auth.models import OAuthIdentity
from aixiate_auth.oauth import (
    ExternalIdentity,
    Provider,
    ProviderClients,
    ProviderError,
    RedirectAllowList,
    with_query,
)
from aixiate_auth.repository import IdentityRepository
from aixiate_auth.schemas import MfaChallenge, TokenPair
from aixiate_auth.services.lockout import LockoutService
from aixiate_auth.services.mfa import MfaService
from aixiate_auth.services.registration import RegistrationService, insert_user
from aixiate_auth.services.sessions import SessionService
from aixiate_auth.settings import AuthSettings

STATE_TTL_SECONDS = 600
EXCHANGE_TTL_SECONDS = 60
LINK_TTL_SECONDS = 600
#: The ``amr`` of a login through a provider. RFC 8176 has no name for federation; this
#: one is Keycloak's and Azure AD's habit too.
AMR_FEDERATED = "fed"
AMR_PASSWORD = "pwd"  # noqa: S105 - an RFC 8176 method name
#: Errors a callback reports to the front end (``?error=``).
CALLBACK_ERRORS = frozenset(
    {
        "access_denied",
        "invalid_state",
        "provider_error",
        "email_not_verified",
        "identity_taken",
        "registration_closed",
    }
)
_MAX_NAME = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class OAuthService:
    providers: Mapping[str, Provider]
    clients: ProviderClients
    redirects: RedirectAllowList
    #: The ``state`` of each authorization request (10 minutes).
    states: Handles
    #: The one-time codes the callback hands the front end (60 seconds).
    exchange_codes: Handles
    #: The proofs a ``link_required`` answer asks for (10 minutes).
    link_tokens: Handles
    settings: AuthSettings
    passwords: Passwords
    registration: RegistrationService
    lockouts: LockoutService
    sessions: SessionService
    mfa: MfaService
    outbox: Outbox
    sessionmaker: async_sessionmaker[AsyncSession]

    def provider(self, name: str) -> Provider:
        provider = self.providers.get(name)
        if provider is None:
            raise UnknownProvider()
        return provider

    # --- the way out and back ---------------------------------------------------------

    async def authorize(
        self, name: str, redirect_uri: str, *, link_user_id: UUID | None = None
    ) -> tuple[str, str]:
        """The provider's authorization URL for a new flow returning to ``redirect_uri``,
        and the browser binding: a secret the browser must bring back to the callback
        (in the flow cookie), so a callback URL cannot be finished in another browser
        (login CSRF, or linking someone else's provider account to a victim's)."""
        provider = self.provider(name)
        if not self.redirects.permits(redirect_uri):
            raise InvalidRedirectUri()
        verifier, nonce, binding = new_token(48), new_token(), new_token()
        record = {
            "provider": name,
            "redirect": redirect_uri,
            "verifier": verifier,
            "nonce": nonce,
            "binding": token_digest(binding),
            "link_user": str(link_user_id) if link_user_id else None,
        }
        state = await self.states.put(record)
        try:
            url = await self.clients.authorization_url(
                provider, state=state, verifier=verifier, nonce=nonce
            )
        except ProviderError as exc:
            raise ServiceUnavailable(f"{provider.display_name} cannot be reached.") from exc
        return url, binding

    async def callback(
        self,
        session: AsyncSession,
        name: str,
        *,
        code: str | None,
        state: str | None,
        error: str | None,
        binding: str | None,
    ) -> str:
        """Where to send the browser: the front end with ``code``, ``linked`` or
        ``error``. Without a valid ``state`` there is nowhere trustworthy to send it,
        and :class:`InvalidOAuthState` is raised instead."""
        provider = self.provider(name)
        record = await self.states.take(state) if state else None
        if record is None or record["provider"] != name:
            await self._failed(session, "auth.oauth.callback.failed", None, "invalid_state", name)
            raise InvalidOAuthState()
        # Taken before this check, so a state that reached the wrong browser is spent.
        if not hmac.compare_digest(record["binding"], token_digest(binding or "")):
            await self._failed(session, "auth.oauth.callback.failed", None, "other_browser", name)
            raise InvalidOAuthState()
        redirect: str = record["redirect"]
        if error is not None or not code:
            reason = "access_denied" if error == "access_denied" else "provider_error"
            await self._failed(session, "auth.oauth.callback.failed", None, reason, name)
            return with_query(redirect, error=reason)
        try:
            identity = await self.clients.identity(
                provider, code=code, verifier=record["verifier"], nonce=record["nonce"]
            )
        except ProviderError as exc:
            await self._failed(session, "auth.oauth.callback.failed", None, exc.reason, name)
            return with_query(redirect, error="provider_error")
        if record["link_user"]:
            return await self._link_signed_in(
                session, provider, identity, UUID(record["link_user"]), redirect
            )
        return await self._sign_in(session, provider, identity, redirect)

    async def _sign_in(
        self, session: AsyncSession, provider: Provider, identity: ExternalIdentity, redirect: str
    ) -> str:
        known = await IdentityRepository(session).find(provider.name, identity.subject)
        if known is not None:
            code = await self._exchange_code("login", known.user_id, provider)
            return with_query(redirect, code=code)
        if identity.email is None:
            await self._failed(
                session, "auth.oauth.callback.failed", None, "no_email", provider.name
            )
            return with_query(redirect, error="provider_error")
        email = normalize_email(identity.email)
        users = UserRepository(session)
        existing = await users.get_by_email(email)
        if existing is None and not self.settings.may_register(email):
            event = "auth.oauth.callback.failed"
            await self._failed(session, event, None, "registration_closed", provider.name)
            return with_query(redirect, error="registration_closed")
        if existing is None:
            user = User(
                email=email,
                password_hash=None,
                full_name=(identity.name or "")[:_MAX_NAME] or None,
                roles=[],
                is_verified=identity.email_verified,
            )
            if await insert_user(session, user):
                return await self._created(session, provider, identity, user, redirect)
            existing = await users.get_by_email(email)  # registered a moment ago
            if existing is None:
                return with_query(redirect, error="provider_error")
        # Never linked silently: the exchange asks the owner to prove the account.
        handoff = {"subject": identity.subject, "email": email}
        code = await self._exchange_code("link", existing.id, provider, handoff)
        return with_query(redirect, code=code)

    async def _created(
        self,
        session: AsyncSession,
        provider: Provider,
        identity: ExternalIdentity,
        user: User,
        redirect: str,
    ) -> str:
        linked = OAuthIdentity(
            user_id=user.id, provider=provider.name, subject=identity.subject, email=user.email
        )
        await IdentityRepository(session).add(linked)
        await audit_service.record_own(
            session, "user.registered", user.id, data={"provider": provider.name}
        )
        await audit_service.record_own(
            session,
            "auth.oauth.account_created",
            user.id,
            data={"provider": provider.name, "email_verified": identity.email_verified},
        )
        if not user.is_verified:
            await self.registration.send_verification(session, user)
            if self.settings.require_email_verification:
                return with_query(redirect, error="email_not_verified")
        code = await self._exchange_code("login", user.id, provider)
        return with_query(redirect, code=code)

    async def _exchange_code(
        self, kind: str, user_id: UUID, provider: Provider, extra: Mapping[str, Any] | None = None
    ) -> str:
        record = {"kind": kind, "user": str(user_id), "provider": provider.name, **(extra or {})}
        return await self.exchange_codes.put(record)

    async def _link_signed_in(
        self,
        session: AsyncSession,
        provider: Provider,
        identity: ExternalIdentity,
        user_id: UUID,
        redirect: str,
    ) -> str:
        user = await UserRepository(session).get(user_id)
        if user is None or not user.is_active:
            await self._failed(
                session, "auth.oauth.link.failed", user_id, "inactive", provider.name
            )
            return with_query(redirect, error="access_denied")
        identities = IdentityRepository(session)
        known = await identities.find(provider.name, identity.subject)
        if known is not None and known.user_id == user.id:
            return with_query(redirect, linked=provider.name)
        linked = OAuthIdentity(
            user_id=user.id, provider=provider.name, subject=identity.subject, email=identity.email
        )
        if known is not None or not await identities.add(linked):
            await self._failed(
                session, "auth.oauth.link.failed", user.id, "identity_taken", provider.name
            )
            return with_query(redirect, error="identity_taken")
        await self._linked(session, user, provider, via="session")
        return with_query(redirect, linked=provider.name)

    # --- the front end's side ---------------------------------------------------------

    async def exchange(self, session: AsyncSession, code: str) -> TokenPair | MfaChallenge:
        record = await self.exchange_codes.take(code)
        if record is None:
            await self._failed(session, "auth.oauth.exchange.failed", None, "unknown_code", None)
            raise InvalidExchangeCode()
        provider = self.provider(record["provider"])
        user = await UserRepository(session).get(UUID(record["user"]))
        if user is None:
            await self._failed(session, "auth.oauth.exchange.failed", None, "unknown_user", None)
            raise InvalidExchangeCode()
        if record["kind"] == "link":
            link_token = await self.link_tokens.put(
                {"user": str(user.id), "provider": provider.name, "subject": record["subject"]}
            )
            await self._failed(
                session, "auth.oauth.link_required", user.id, "email_taken", provider.name
            )
            raise LinkRequired(extra={"link_token": link_token, "provider": provider.name})
        return await self._signed_in(session, user, provider, amr=[AMR_FEDERATED])

    async def link(
        self, session: AsyncSession, *, link_token: str, password: str
    ) -> TokenPair | MfaChallenge:
        """Proves the account with its password, links the identity, and signs in."""
        record = await self.link_tokens.peek(link_token)
        if record is None:
            raise InvalidLinkToken()
        provider = self.provider(record["provider"])
        user = await UserRepository(session).get(UUID(record["user"]))
        if user is None:
            raise InvalidLinkToken()
        await end_read(session)
        if (locked_for := await self.lockouts.check(user.email)) is not None:
            raise AccountLocked(locked_for)
        check = await self.passwords.verify(password, user.password_hash)
        if not check.valid:
            session.expunge(user)  # the failure's rollback must not expire it
            await self._failed(
                session, "auth.oauth.link.failed", user.id, "bad_password", provider.name
            )
            await self.lockouts.record_failure(user.email, user)
            raise InvalidCredentials()
        # Before the link token is spent: nothing is linked to an account that cannot sign in.
        await self._check_usable(session, user, provider)
        if await self.link_tokens.take(link_token) is None:
            raise InvalidLinkToken()  # a concurrent request used it
        identity = OAuthIdentity(
            user_id=user.id, provider=provider.name, subject=record["subject"], email=user.email
        )
        if not await IdentityRepository(session).add(identity):
            raise IdentityTaken()
        await self._linked(session, user, provider, via="password")
        await self.lockouts.succeeded(user.email)
        return await self._signed_in(session, user, provider, amr=[AMR_PASSWORD, AMR_FEDERATED])

    async def _signed_in(
        self, session: AsyncSession, user: User, provider: Provider, *, amr: list[str]
    ) -> TokenPair | MfaChallenge:
        await self._check_usable(session, user, provider)
        if user.mfa_enabled:
            return await self.mfa.challenge(session, user, amr=amr)
        return await self.sessions.sign_in(session, user, amr=amr, provider=provider.name)

    async def _check_usable(self, session: AsyncSession, user: User, provider: Provider) -> None:
        """403 ``account_inactive`` or ``email_not_verified``, audited, as at login."""
        if not user.is_active:
            event = "auth.oauth.login.failed"
            await self._failed(session, event, user.id, "inactive", provider.name)
            raise AccountInactive()
        if self.settings.require_email_verification and not user.is_verified:
            event = "auth.oauth.login.failed"
            await self._failed(session, event, user.id, "unverified", provider.name)
            raise EmailNotVerified()

    # --- the signed-in user's identities ------------------------------------------------

    async def start_link(
        self, principal: Principal, name: str, redirect_uri: str
    ) -> tuple[str, str]:
        return await self.authorize(name, redirect_uri, link_user_id=principal.user_id)

    async def record_link_started(
        self, session: AsyncSession, principal: Principal, name: str
    ) -> None:
        if any(
            i.provider == name for i in await IdentityRepository(session).of_user(principal.user_id)
        ):
            raise IdentityTaken("A provider account of this provider is already linked.")
        await audit_service.record_own(
            session, "auth.oauth.link_started", principal.user_id, data={"provider": name}
        )

    async def identities(self, session: AsyncSession, principal: Principal) -> list[OAuthIdentity]:
        return await IdentityRepository(session).of_user(principal.user_id)

    async def unlink(self, session: AsyncSession, principal: Principal, name: str) -> None:
        # The row lock makes concurrent unlinks of one account take turns, so two of them
        # cannot each see the other identity and leave the account with no way in.
        user = await session.get(User, principal.user_id, with_for_update=True)
        identities = IdentityRepository(session)
        mine = await identities.of_user(principal.user_id)
        target = next((i for i in mine if i.provider == name), None)
        if user is None or target is None:
            raise IdentityNotFound()
        if user.password_hash is None and len(mine) == 1:
            raise LastCredential()
        await identities.remove(target)
        provider = self.providers.get(name)
        await self.outbox.enqueue(
            session,
            to=user.email,
            template="identity_unlinked",
            context={"name": user.full_name, "provider_name": _display(provider, name)},
        )
        await audit_service.record_own(
            session, "auth.oauth.unlinked", user.id, data={"provider": name}
        )

    # --- helpers ----------------------------------------------------------------------

    async def _linked(
        self, session: AsyncSession, user: User, provider: Provider, *, via: str
    ) -> None:
        await self.outbox.enqueue(
            session,
            to=user.email,
            template="identity_linked",
            context={"name": user.full_name, "provider_name": provider.display_name},
        )
        await audit_service.record_own(
            session, "auth.oauth.linked", user.id, data={"provider": provider.name, "via": via}
        )

    async def _failed(
        self,
        session: AsyncSession,
        event_type: str,
        user_id: UUID | None,
        reason: str,
        provider: str | None,
    ) -> None:
        await audit_service.record_failure(
            session,
            self.sessionmaker,
            event_type,
            user_id=user_id,
            reason=reason,
            data={"provider": provider} if provider else None,
        )


def _display(provider: Provider | None, name: str) -> str:
    return provider.display_name if provider else name
