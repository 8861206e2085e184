"""Social login: ``/auth/oauth`` (sign in with a provider, exchange, link) and
``/users/me/identities`` (the signed-in user's linked providers). The flow for a front
end is in docs/social-login.md."""

from typing import Annotated

from aixiate_core.db import SessionDep
from aixiate_core.errors import RateLimited, ServiceUnavailable, problem_responses
from aixiate_core.ratelimit import Throttle, rate_limit
from aixiate_core.security import CurrentPrincipal
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import RedirectResponse

from aixiate_auth.dependencies import AuthDep
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
from aixiate_auth.router import TransportQuery, deliver
from aixiate_auth.schemas import (
    AuthorizeUrl,
    IdentityLinkStart,
    IdentityRead,
    MfaChallenge,
    OAuthExchange,
    OAuthLink,
    ProviderRead,
    ReturnUrl,
    TokenPair,
)
from aixiate_auth.services.oauth import STATE_TTL_SECONDS

oauth_router = APIRouter(prefix="/auth/oauth", tags=["auth"])
identities_router = APIRouter(prefix="/users/me/identities", tags=["users"])

OAuthLimit = Annotated[Throttle, Depends(rate_limit("oauth"))]
LinkLimit = Annotated[Throttle, Depends(rate_limit("login"))]
# The browser leaves with a code in the URL: neither cache it nor tell the next page.
_REDIRECT_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
}


#: Ties a flow to the browser that started it: the callback must bring it back.
#: SameSite=Lax, not Strict: the callback is a top-level navigation from the provider's
#: site, on which a Strict cookie would not be sent.
FLOW_COOKIE = "__Host-aixiate_oauth"


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=status.HTTP_302_FOUND, headers=_REDIRECT_HEADERS)


def _bind_browser(response: Response, binding: str) -> None:
    response.set_cookie(
        FLOW_COOKIE,
        binding,
        max_age=STATE_TTL_SECONDS,
        path="/",
        secure=True,
        httponly=True,
        samesite="lax",
    )


@oauth_router.get("/providers", response_model=list[ProviderRead])
async def providers(auth: AuthDep) -> list[ProviderRead]:
    """The providers users can sign in with, for the front end's buttons."""
    return [
        ProviderRead(name=p.name, display_name=p.display_name)
        for p in auth.oauth.providers.values()
    ]


@oauth_router.get(
    "/{provider}/authorize",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    responses=problem_responses(
        InvalidRedirectUri, UnknownProvider, ServiceUnavailable, RateLimited, auth=False
    ),
)
async def authorize(
    provider: str,
    redirect_uri: Annotated[ReturnUrl, Query()],
    auth: AuthDep,
    limit: OAuthLimit,
) -> RedirectResponse:
    """Sends the browser to the provider (authorization code flow with PKCE, a
    single-use `state` for 10 minutes and, for OpenID Connect, a `nonce`). The flow
    comes back to `redirect_uri`, which must be one of `AIXIATE_OAUTH_REDIRECT_URLS`
    (scheme, host, port and path prefix): 400 `invalid_redirect_uri` otherwise."""
    url, binding = await auth.oauth.authorize(provider, redirect_uri)
    response = _redirect(url)
    _bind_browser(response, binding)
    return response


@oauth_router.get(
    "/{provider}/callback",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    responses=problem_responses(InvalidOAuthState, UnknownProvider, RateLimited, auth=False),
)
async def callback(
    provider: str,
    request: Request,
    session: SessionDep,
    auth: AuthDep,
    limit: OAuthLimit,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    state: Annotated[str | None, Query(max_length=256)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> RedirectResponse:
    """Where the provider sends the browser back. Redirects to the front end's
    `redirect_uri` with `?code=` (a one-time exchange code, 60 s), `?linked={provider}`
    after linking, or `?error=` (`access_denied`, `provider_error`, `email_not_verified`,
    `identity_taken`). A missing, used or expired `state` answers 400 `invalid_state`:
    there is then no trustworthy place to send the browser. So does a callback in a
    browser other than the one that started the flow (it lacks the flow cookie)."""
    url = await auth.oauth.callback(
        session,
        provider,
        code=code,
        state=state,
        error=error,
        binding=request.cookies.get(FLOW_COOKIE),
    )
    response = _redirect(url)
    response.delete_cookie(FLOW_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
    return response


@oauth_router.post(
    "/exchange",
    response_model=TokenPair | MfaChallenge,
    responses=problem_responses(
        InvalidExchangeCode,
        LinkRequired,
        AccountInactive,
        EmailNotVerified,
        RateLimited,
        auth=False,
    ),
)
async def exchange(
    body: OAuthExchange,
    session: SessionDep,
    auth: AuthDep,
    response: Response,
    limit: OAuthLimit,
    transport: TransportQuery = "body",
) -> TokenPair | MfaChallenge:
    """Turns the exchange code of the callback into tokens (or, for an account with
    two-step verification, the `mfa_required` answer of `/auth/login`). 400
    `invalid_exchange_code` when used, expired or unknown; 409 `link_required` with a
    `link_token` when an account with the provider's address exists but is not linked."""
    return deliver(response, await auth.oauth.exchange(session, body.code), transport, auth)


@oauth_router.post(
    "/link",
    response_model=TokenPair | MfaChallenge,
    responses=problem_responses(
        InvalidLinkToken,
        InvalidCredentials,
        IdentityTaken,
        AccountLocked,
        AccountInactive,
        RateLimited,
        auth=False,
    ),
)
async def link(
    body: OAuthLink,
    session: SessionDep,
    auth: AuthDep,
    response: Response,
    limit: LinkLimit,
    transport: TransportQuery = "body",
) -> TokenPair | MfaChallenge:
    """Links the provider identity of a `link_required` answer to the existing account,
    proving it with the account's password (a wrong one answers 401
    `invalid_credentials` and counts toward the lockout), and signs in."""
    answer = await auth.oauth.link(session, link_token=body.link_token, password=body.password)
    return deliver(response, answer, transport, auth)


# --- the signed-in user's identities -------------------------------------------------------


@identities_router.get("", response_model=list[IdentityRead], responses=problem_responses())
async def list_identities(
    principal: CurrentPrincipal, session: SessionDep, auth: AuthDep
) -> list[IdentityRead]:
    """The providers linked to the caller's account."""
    return [
        IdentityRead(provider=i.provider, subject=i.subject, email=i.email, created_at=i.created_at)
        for i in await auth.oauth.identities(session, principal)
    ]


@identities_router.post(
    "/{provider}",
    response_model=AuthorizeUrl,
    responses=problem_responses(
        InvalidRedirectUri, UnknownProvider, IdentityTaken, ServiceUnavailable, RateLimited
    ),
)
async def start_link(
    provider: str,
    body: IdentityLinkStart,
    principal: CurrentPrincipal,
    session: SessionDep,
    auth: AuthDep,
    response: Response,
    limit: OAuthLimit,
) -> AuthorizeUrl:
    """Starts linking a provider to the caller's account: send the browser to
    `authorize_url`; the callback returns to `redirect_uri` with `?linked={provider}`,
    or `?error=identity_taken` when that provider account belongs to someone else. 409
    `identity_taken` when this account already has that provider."""
    auth.oauth.provider(provider)
    await auth.oauth.record_link_started(session, principal, provider)
    url, binding = await auth.oauth.start_link(principal, provider, body.redirect_uri)
    # The browser that asked must be the one that comes back: fetch this with
    # credentials, so the flow cookie is kept for the callback.
    _bind_browser(response, binding)
    response.headers["Cache-Control"] = "no-store"
    return AuthorizeUrl(authorize_url=url)


@identities_router.delete(
    "/{provider}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(IdentityNotFound, LastCredential),
)
async def unlink(
    provider: str, principal: CurrentPrincipal, session: SessionDep, auth: AuthDep
) -> None:
    """Removes a linked provider. 409 `last_credential` when it is the account's only way
    in (no password and no other provider): set a password through
    `/auth/password/forgot` first."""
    await auth.oauth.unlink(session, principal, provider)
