"""What aixiate-auth holds while the app runs: built once at start-up, complete from then.

:func:`auth_extension` builds it in the lifespan, from core's resources (database,
store, outbox) and the users package's state, and hands each use case exactly the
collaborators it needs. Routes reach it through :data:`~aixiate_auth.dependencies.AuthDep`.
"""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aixiate_core.app import API_PREFIX, Extension
from aixiate_core.crypto import SecretBox
from aixiate_core.events import DomainEvents
from aixiate_core.resources import State
from aixiate_core.security import RESOLVER_STATE_KEY
from aixiate_core.settings import Settings
from aixiate_users.passwords import Passwords
from aixiate_users.state import UsersState

from aixiate_auth import subscribers
from aixiate_auth.handles import Handles
from aixiate_auth.keys import KeyRing, signing_key_box
from aixiate_auth.liveness import Liveness
from aixiate_auth.lockout import Lockout
from aixiate_auth.mfa import MfaChallenges
from aixiate_auth.oauth import ProviderClients, RedirectAllowList
from aixiate_auth.resolver import TokenResolver
from aixiate_auth.services.lockout import LockoutService
from aixiate_auth.services.login import LoginService
from aixiate_auth.services.mfa import TOTP_BOX_PURPOSE, MfaService
from aixiate_auth.services.oauth import (
    EXCHANGE_TTL_SECONDS,
    LINK_TTL_SECONDS,
    STATE_TTL_SECONDS,
    OAuthService,
)
from aixiate_auth.services.recovery import RecoveryService
from aixiate_auth.services.registration import RegistrationService
from aixiate_auth.services.sessions import SessionService
from aixiate_auth.settings import AuthSettings
from aixiate_auth.transport import CookieTransport

#: The lifespan state entry that holds the :class:`AuthState`.
STATE_KEY = "auth"


@dataclass(frozen=True, slots=True)
class AuthState:
    settings: AuthSettings
    passwords: Passwords
    keyring: KeyRing
    liveness: Liveness
    lockout: Lockout
    resolver: TokenResolver
    sessions: SessionService
    login: LoginService
    mfa: MfaService
    lockouts: LockoutService
    registration: RegistrationService
    recovery: RecoveryService
    cookies: CookieTransport
    oauth: OAuthService


async def build_auth_state(state: State, settings: AuthSettings, users: UsersState) -> AuthState:
    """Loads the signing keys (creating the first one if there is none) and wires the
    use cases. Nothing in the result is left to be started later."""
    core: Settings = state["settings"]
    sessionmaker, store, outbox = state["sessionmaker"], state["store"], state["outbox"]
    keyring = KeyRing(sessionmaker, signing_key_box(core.secret()), settings)
    await keyring.start()
    liveness = Liveness(store, settings)
    lockout = Lockout(store, settings, secret=core.secret())
    sessions = SessionService(
        settings=settings,
        keyring=keyring,
        liveness=liveness,
        outbox=outbox,
        sessionmaker=sessionmaker,
    )
    lockouts = LockoutService(lockout=lockout, outbox=outbox, sessionmaker=sessionmaker)
    mfa = MfaService(
        issuer=core.product_name,
        secret_key=core.secret(),
        box=SecretBox(core.secret(), TOTP_BOX_PURPOSE),
        passwords=users.passwords,
        challenges=MfaChallenges(store),
        lockouts=lockouts,
        sessions=sessions,
        outbox=outbox,
        sessionmaker=sessionmaker,
    )
    registration = RegistrationService(
        settings=settings,
        users_settings=users.settings,
        passwords=users.passwords,
        sessions=sessions,
        outbox=outbox,
        sessionmaker=sessionmaker,
    )
    oauth = OAuthService(
        providers=settings.providers(),
        clients=ProviderClients(callback_base=f"{core.api_url}{API_PREFIX}/auth/oauth"),
        redirects=RedirectAllowList(settings.oauth_redirect_urls or (core.public_url,)),
        states=Handles(store, "auth:oauth:state", ttl_seconds=STATE_TTL_SECONDS),
        exchange_codes=Handles(store, "auth:oauth:exchange", ttl_seconds=EXCHANGE_TTL_SECONDS),
        link_tokens=Handles(store, "auth:oauth:link", ttl_seconds=LINK_TTL_SECONDS),
        settings=settings,
        passwords=users.passwords,
        registration=registration,
        lockouts=lockouts,
        sessions=sessions,
        mfa=mfa,
        outbox=outbox,
        sessionmaker=sessionmaker,
    )
    return AuthState(
        settings=settings,
        passwords=users.passwords,
        keyring=keyring,
        liveness=liveness,
        lockout=lockout,
        resolver=TokenResolver(
            settings=settings,
            keyring=keyring,
            liveness=liveness,
            store=store,
            sessionmaker=sessionmaker,
        ),
        sessions=sessions,
        login=LoginService(
            settings=settings,
            passwords=users.passwords,
            lockouts=lockouts,
            sessions=sessions,
            mfa=mfa,
            sessionmaker=sessionmaker,
        ),
        mfa=mfa,
        lockouts=lockouts,
        registration=registration,
        oauth=oauth,
        cookies=CookieTransport(secret_key=core.secret(), origins=core.browser_origins),
        recovery=RecoveryService(
            settings=settings,
            passwords=users.passwords,
            lockout=lockout,
            sessions=sessions,
            outbox=outbox,
            sessionmaker=sessionmaker,
        ),
    )


def auth_extension(settings: AuthSettings, users: UsersState, events: DomainEvents) -> Extension:
    """Adds the :class:`AuthState` and its token resolver (core's ``PrincipalResolver``)
    to the lifespan state, and subscribes auth to users' events for as long as it runs."""

    @asynccontextmanager
    async def extend(state: State) -> AsyncIterator[Mapping[str, Any]]:
        auth = await build_auth_state(state, settings, users)
        unsubscribers = subscribers.subscribe(events, auth.sessions)
        try:
            yield {STATE_KEY: auth, RESOLVER_STATE_KEY: auth.resolver}
        finally:
            for unsubscribe in unsubscribers:
                unsubscribe()

    return extend
