"""``/auth``: registration, login, tokens, sessions and password flows; the admin unlock
and the JWKS. Each route parses, calls one use case of the :class:`AuthState`, and shapes
the answer."""

from typing import Annotated, Any
from uuid import UUID

from aixiate_core.db import SessionDep
from aixiate_core.errors import RateLimited, problem_responses
from aixiate_core.ratelimit import Throttle, rate_limit
from aixiate_core.security import AdminPrincipal, CurrentPrincipal, Principal, get_principal
from aixiate_users.dependencies import TargetUser
from aixiate_users.errors import (
    EmailTaken,
    InvalidActionToken,
    InvalidPassword,
    UserNotFound,
    WeakPassword,
)
from aixiate_users.models import User
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import OAuth2PasswordRequestForm

from aixiate_auth.dependencies import AuthDep
from aixiate_auth.errors import (
    AccountInactive,
    AccountLocked,
    CsrfFailed,
    EmailNotVerified,
    InvalidCredentials,
    InvalidMfaCode,
    InvalidMfaToken,
    InvalidRefreshToken,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    MfaRequired,
    RegistrationClosed,
    SessionNotFound,
    TokenReused,
    WrongMfaCode,
)
from aixiate_auth.schemas import (
    Accepted,
    EmailVerification,
    Invitation,
    InvitationAccept,
    Login,
    MfaChallenge,
    MfaCode,
    MfaLogin,
    MfaPassword,
    MfaStatus,
    PasswordChange,
    PasswordForgot,
    PasswordReset,
    RecoveryCodes,
    RefreshRequest,
    Registration,
    SessionRead,
    TokenPair,
    TotpSetup,
    UserRead,
    VerificationResend,
)
from aixiate_auth.transport import Transport

router = APIRouter(prefix="/auth", tags=["auth"])

# Rate limits (aixiate_core.ratelimit): the per-IP check runs as the dependency, the
# per-account one in the route, once the body names the account. /login and /token
# share one budget.
LoginLimit = Annotated[Throttle, Depends(rate_limit("login"))]
RegisterLimit = Annotated[Throttle, Depends(rate_limit("register"))]
ResendLimit = Annotated[Throttle, Depends(rate_limit("verify_email_resend"))]
ForgotLimit = Annotated[Throttle, Depends(rate_limit("password_forgot"))]
MfaLimit = Annotated[Throttle, Depends(rate_limit("mfa"))]

REGISTRATION_ACCEPTED = Accepted(
    detail="Thanks. We have sent an email to that address with the next step."
)
FORGOT_ACCEPTED = Accepted(
    detail="If that address has an account, a link to reset the password is on its way."
)
INVITED = Accepted(detail="The invitation is on its way.")
RESEND_ACCEPTED = Accepted(
    detail="If that address has an account waiting for verification, a new link is on its way."
)


@router.post(
    "/register",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=problem_responses(WeakPassword, RegistrationClosed, RateLimited, auth=False),
)
async def register(
    body: Registration, session: SessionDep, auth: AuthDep, limit: RegisterLimit
) -> Accepted:
    """Creates an account and emails a link to verify the address.

    The answer is the same whether or not the address already has an account; its owner
    is told by email instead. A password that breaks the policy answers 422
    `weak_password` with a `reason`: `too_short`, `too_long`, `common` or
    `contains_email`. When registration is not open to the address
    (`AIXIATE_REGISTRATION`, `AIXIATE_REGISTRATION_EMAIL_DOMAINS`) it answers 403
    `registration_closed`, the same for every such address.
    """
    await limit.account(body.email)
    await auth.registration.register(session, body)
    return REGISTRATION_ACCEPTED


@router.post(
    "/verify-email",
    response_model=UserRead,
    responses=problem_responses(InvalidActionToken, auth=False),
)
async def verify_email(body: EmailVerification, session: SessionDep, auth: AuthDep) -> User:
    """Marks the address verified with the token from the verification email.

    Each token works once and expires (24 hours by default); requesting a new one
    retires the earlier ones.
    """
    return await auth.registration.verify_email(session, body.token)


@router.post(
    "/verify-email/resend",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=problem_responses(RateLimited, auth=False),
)
async def resend_verification(
    body: VerificationResend, session: SessionDep, auth: AuthDep, limit: ResendLimit
) -> Accepted:
    """Sends a new verification link. The answer is the same for every address."""
    await limit.account(body.email)
    await auth.registration.resend_verification(session, body.email)
    return RESEND_ACCEPTED


# --- login, tokens and sessions -------------------------------------------------------

# RFC 6749 5.1: token responses must not be cached.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _token_response[T: TokenPair | MfaChallenge | RecoveryCodes | TotpSetup](
    response: Response, answer: T
) -> T:
    response.headers.update(_NO_STORE)
    return answer


#: ``?transport=cookie``: the refresh token goes into an HttpOnly cookie (browser apps).
TransportQuery = Annotated[
    Transport,
    Query(
        description="`cookie`: the refresh token is set as the HttpOnly cookie "
        "`__Host-aixiate_refresh` (and `refresh_token` is null); `body`: it is in the JSON."
    ),
]


def deliver[T: TokenPair | MfaChallenge](
    response: Response, answer: T, transport: Transport, auth: AuthDep
) -> T:
    """The answer of a route that issues tokens, by the requested transport."""
    if transport == "cookie" and isinstance(answer, TokenPair):
        answer = auth.cookies.issue(response, answer)  # type: ignore[assignment]
    return _token_response(response, answer)


@router.post(
    "/invite/accept",
    response_model=TokenPair,
    responses=problem_responses(InvalidActionToken, WeakPassword, RateLimited, auth=False),
    dependencies=[Depends(rate_limit("password_reset"))],
)
async def accept_invite(
    body: InvitationAccept,
    session: SessionDep,
    auth: AuthDep,
    response: Response,
    transport: TransportQuery = "body",
) -> TokenPair:
    """Accepts an invitation with the token from its email: sets the account's password,
    marks the address verified, and signs in. The token works once and expires (7 days
    by default)."""
    pair = await auth.registration.accept_invite(session, token=body.token, password=body.password)
    return deliver(response, pair, transport, auth)


@router.post(
    "/login",
    response_model=TokenPair | MfaChallenge,
    responses=problem_responses(
        InvalidCredentials,
        EmailNotVerified,
        AccountInactive,
        AccountLocked,
        RateLimited,
        auth=False,
    ),
)
async def login(
    body: Login,
    session: SessionDep,
    auth: AuthDep,
    response: Response,
    limit: LoginLimit,
    transport: TransportQuery = "body",
) -> TokenPair | MfaChallenge:
    """Exchanges email and password for an access token and a refresh token.

    For an account with two-step verification the answer is instead
    `{"mfa_required": true, "mfa_token", "mfa_methods"}`: post the token with a code to
    `/auth/login/mfa` within 5 minutes.

    Unknown email and wrong password answer the same 401 `invalid_credentials`, in the
    same time. 403 `email_not_verified` and `account_inactive` follow only a correct
    password. 429 `account_locked` after repeated failures for the account, and
    `rate_limited` when a limit is used up, carry `Retry-After`.
    """
    await limit.account(body.email)
    answer = await auth.login.with_password(session, email=body.email, password=body.password)
    return deliver(response, answer, transport, auth)


@router.post(
    "/login/mfa",
    response_model=TokenPair,
    responses=problem_responses(
        WrongMfaCode, InvalidMfaToken, AccountLocked, RateLimited, auth=False
    ),
)
async def login_mfa(
    body: MfaLogin,
    session: SessionDep,
    auth: AuthDep,
    response: Response,
    limit: MfaLimit,
    transport: TransportQuery = "body",
) -> TokenPair:
    """The second step of a login with two-step verification: the `mfa_token` from
    `/auth/login` and a code from the authenticator app, or one of the recovery codes.

    401 `invalid_mfa_code` for a wrong code (it counts toward the account's lockout, and
    the fifth ends the token); 401 `invalid_mfa_token` for a used, expired or unknown
    token. A TOTP code works once.
    """
    pair = await auth.mfa.login(
        session, mfa_token=body.mfa_token, code=body.code, throttle_account=limit.account
    )
    return deliver(response, pair, transport, auth)


@router.post(
    "/token",
    response_model=TokenPair,
    responses=problem_responses(
        InvalidCredentials,
        EmailNotVerified,
        AccountInactive,
        MfaRequired,
        AccountLocked,
        RateLimited,
        auth=False,
    ),
)
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    auth: AuthDep,
    response: Response,
    limit: LoginLimit,
) -> TokenPair:
    """The OAuth2 password grant (form fields `username` = email and `password`), for
    Swagger UI's Authorize button and OAuth2 clients. Same rules as `/login`; the grant
    has no second step, so an account with two-step verification answers 403
    `mfa_required`."""
    await limit.account(form.username)
    pair = await auth.login.with_password(
        session, email=form.username, password=form.password, step_up=False
    )
    assert isinstance(pair, TokenPair)  # step_up=False never answers a challenge
    return _token_response(response, pair)


@router.post(
    "/refresh",
    response_model=TokenPair,
    responses=problem_responses(
        InvalidRefreshToken, TokenReused, CsrfFailed, RateLimited, auth=False
    ),
    dependencies=[Depends(rate_limit("refresh"))],
)
async def refresh(
    request: Request,
    session: SessionDep,
    auth: AuthDep,
    response: Response,
    transport: TransportQuery = "body",
    body: RefreshRequest | None = None,
) -> TokenPair:
    """Rotates the refresh token: the answer carries a new pair and the old refresh token
    stops working. Presenting an already-rotated token ends the whole session (someone
    may have copied it) and answers 401 `token_reused`.

    With `?transport=cookie` and no body, the refresh token comes from the
    `__Host-aixiate_refresh` cookie and the new one goes back there; the request needs
    the `X-CSRF-Token` header (the `__Host-aixiate_csrf` cookie's value) and, when the
    browser sends `Origin`, an allowed origin: 403 `csrf_failed` otherwise.
    """
    if transport == "cookie":
        raw = auth.cookies.refresh_token(request)
        assert raw is not None  # required: a missing cookie raised
    elif body is None:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    else:
        raw = body.refresh_token
    pair = await auth.sessions.refresh(session, raw)
    return deliver(response, pair, transport, auth)


async def _caller_unless_cookie(
    request: Request, transport: TransportQuery = "body"
) -> Principal | None:
    # Cookie transport identifies the session by its cookie: after a reload the app
    # holds no access token, and must still be able to sign out.
    return None if transport == "cookie" else await get_principal(request)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(CsrfFailed),
    openapi_extra={"security": [{"OAuth2PasswordBearer": []}, {}]},
)
async def logout(
    request: Request,
    session: SessionDep,
    auth: AuthDep,
    response: Response,
    principal: Annotated[Principal | None, Depends(_caller_unless_cookie)],
) -> None:
    """Ends the current session; its tokens stop working on the next request, everywhere.

    With `?transport=cookie` (no bearer token needed) it ends the session of the
    `__Host-aixiate_refresh` cookie, with the same CSRF checks as a cookie refresh, and
    clears both cookies.
    """
    if principal is not None:
        await auth.sessions.logout(session, principal)
        return
    raw = auth.cookies.refresh_token(request, required=False)
    if raw is not None:
        await auth.sessions.logout_by_refresh_token(session, raw)
    auth.cookies.clear(response)


@router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses())
async def logout_all(principal: CurrentPrincipal, session: SessionDep, auth: AuthDep) -> None:
    """Ends every session of the caller, this one included."""
    await auth.sessions.logout_all(session, principal)


@router.get("/sessions", response_model=list[SessionRead], responses=problem_responses())
async def list_sessions(
    principal: CurrentPrincipal, session: SessionDep, auth: AuthDep
) -> list[SessionRead]:
    """The caller's active sessions, most recently used first; `current` marks this one."""
    return [
        SessionRead(
            id=item.id,
            created_at=item.created_at,
            last_used_at=item.last_used_at,
            expires_at=min(item.expires_at, item.idle_expires_at),
            ip=item.ip,
            user_agent=item.user_agent,
            current=item.id == principal.session_id,
        )
        for item in await auth.sessions.list_active(session, principal)
    ]


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(SessionNotFound),
)
async def revoke_session(
    session_id: UUID, principal: CurrentPrincipal, session: SessionDep, auth: AuthDep
) -> None:
    """Ends one of the caller's sessions. Another user's session answers 404."""
    await auth.sessions.revoke_own(session, principal, session_id)


# --- password recovery and change -----------------------------------------------------


@router.post(
    "/password/forgot",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=problem_responses(RateLimited, auth=False),
)
async def forgot_password(
    body: PasswordForgot, session: SessionDep, auth: AuthDep, limit: ForgotLimit
) -> Accepted:
    """Emails a password reset link. The answer is the same for every address."""
    await limit.account(body.email)
    await auth.recovery.forgot(session, email=body.email)
    return FORGOT_ACCEPTED


@router.post(
    "/password/reset",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(InvalidActionToken, WeakPassword, RateLimited, auth=False),
    dependencies=[Depends(rate_limit("password_reset"))],
)
async def reset_password(body: PasswordReset, session: SessionDep, auth: AuthDep) -> None:
    """Sets a new password with the token from the reset email and ends every session.
    The token works once and expires (1 hour by default)."""
    await auth.recovery.reset(session, token=body.token, new_password=body.new_password)


@router.post(
    "/password/change",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(InvalidPassword, WeakPassword),
)
async def change_password(
    body: PasswordChange, principal: CurrentPrincipal, session: SessionDep, auth: AuthDep
) -> None:
    """Changes the password (the current one is required) and ends every other session."""
    await auth.recovery.change(
        session,
        principal,
        current_password=body.current_password,
        new_password=body.new_password,
    )


# --- two-step verification ------------------------------------------------------------


@router.get("/mfa", response_model=MfaStatus, responses=problem_responses())
async def mfa_status(principal: CurrentPrincipal, session: SessionDep, auth: AuthDep) -> MfaStatus:
    """Whether two-step verification is on, with which methods, and how many recovery
    codes are left."""
    return await auth.mfa.status(session, principal)


@router.post(
    "/mfa/totp/setup",
    response_model=TotpSetup,
    responses=problem_responses(MfaAlreadyEnabled, RateLimited),
)
async def mfa_totp_setup(
    principal: CurrentPrincipal,
    session: SessionDep,
    auth: AuthDep,
    response: Response,
    limit: MfaLimit,
) -> TotpSetup:
    """A new secret for an authenticator app, as text, as an `otpauth://` URI and as the
    SVG of its QR code. Two-step verification stays off until a code confirms it; calling
    this again before that replaces the secret. 409 `mfa_already_enabled` when it is on."""
    await limit.account(str(principal.user_id))
    return _token_response(response, await auth.mfa.setup(session, principal))


@router.post(
    "/mfa/totp/confirm",
    response_model=RecoveryCodes,
    responses=problem_responses(InvalidMfaCode, MfaAlreadyEnabled, RateLimited),
)
async def mfa_totp_confirm(
    body: MfaCode,
    principal: CurrentPrincipal,
    session: SessionDep,
    auth: AuthDep,
    response: Response,
    limit: MfaLimit,
) -> RecoveryCodes:
    """Turns two-step verification on with a current code from the app, and answers the
    10 recovery codes: shown this once, each usable once. 400 `invalid_mfa_code` for a
    wrong code."""
    await limit.account(str(principal.user_id))
    codes = await auth.mfa.confirm(session, principal, body.code)
    return _token_response(response, RecoveryCodes(recovery_codes=codes))


@router.delete(
    "/mfa/totp",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(InvalidPassword, MfaNotEnabled, AccountLocked, RateLimited),
)
async def mfa_totp_disable(
    body: MfaPassword,
    principal: CurrentPrincipal,
    session: SessionDep,
    auth: AuthDep,
    limit: MfaLimit,
) -> None:
    """Turns two-step verification off (the password is required) and voids the
    recovery codes. A wrong password answers 403 `invalid_password` and counts toward
    the account's lockout."""
    await limit.account(str(principal.user_id))
    await auth.mfa.disable(session, principal, body.password)


@router.post(
    "/mfa/recovery-codes",
    response_model=RecoveryCodes,
    responses=problem_responses(InvalidPassword, MfaNotEnabled, AccountLocked, RateLimited),
)
async def mfa_recovery_codes(
    body: MfaPassword,
    principal: CurrentPrincipal,
    session: SessionDep,
    auth: AuthDep,
    response: Response,
    limit: MfaLimit,
) -> RecoveryCodes:
    """A new set of 10 recovery codes (the password is required); every earlier code
    stops working."""
    await limit.account(str(principal.user_id))
    codes = await auth.mfa.regenerate(session, principal, body.password)
    return _token_response(response, RecoveryCodes(recovery_codes=codes))


# --- administration -------------------------------------------------------------------

# Under /users, where admins manage accounts, but the lockout it clears is auth's.
admin_router = APIRouter(prefix="/users", tags=["users"])


@admin_router.post(
    "/{user_id}/unlock",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(UserNotFound, admin=True),
)
async def unlock_user(
    user: TargetUser, admin: AdminPrincipal, session: SessionDep, auth: AuthDep
) -> None:
    """Clears a lockout after failed logins (role `admin`), at once; answers 204 also
    when the account was not locked."""
    await auth.lockouts.unlock(session, user, admin=admin)


@admin_router.post(
    "/invite",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=problem_responses(EmailTaken, admin=True),
)
async def invite_user(
    body: Invitation, admin: AdminPrincipal, session: SessionDep, auth: AuthDep
) -> Accepted:
    """Creates an account without a password and emails its owner a single-use link to
    choose one (role `admin`); works in every registration mode. 409 `email_taken` when
    the address has an account."""
    await auth.registration.invite(session, body, admin=admin)
    return INVITED


@admin_router.delete(
    "/{user_id}/mfa",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(UserNotFound, admin=True),
)
async def reset_user_mfa(
    user: TargetUser, admin: AdminPrincipal, session: SessionDep, auth: AuthDep
) -> None:
    """Turns a user's two-step verification off and voids their recovery codes (role
    `admin`), for a user who lost both the app and the codes; the owner is told by
    email. Answers 204 also when it was off."""
    await auth.mfa.reset(session, user, admin=admin)


# --- JWKS -----------------------------------------------------------------------------

jwks_router = APIRouter(tags=["auth"])


@jwks_router.get("/.well-known/jwks.json")
async def jwks(auth: AuthDep, response: Response) -> dict[str, Any]:
    """The public keys that verify our access tokens: the active one and every retired
    one whose tokens may still be live. Clients fetch again on an unknown `kid`."""
    await auth.keyring.reload_if_stale()
    response.headers["Cache-Control"] = "public, max-age=300"
    return auth.keyring.jwks()
