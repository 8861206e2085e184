"""Errors of the auth package; core's handlers render them as RFC 9457 problems."""

from aixiate_core.errors import (
    AppError,
    BadRequest,
    Conflict,
    InvalidToken,
    MfaRequired,
    NotFound,
)

__all__ = [
    "AccountInactive",
    "AccountLocked",
    "CsrfFailed",
    "EmailNotVerified",
    "IdentityNotFound",
    "IdentityTaken",
    "InvalidCredentials",
    "InvalidExchangeCode",
    "InvalidLinkToken",
    "InvalidMfaCode",
    "InvalidMfaToken",
    "InvalidOAuthState",
    "InvalidRedirectUri",
    "InvalidRefreshToken",
    "LastCredential",
    "LinkRequired",
    "MfaAlreadyEnabled",
    "MfaNotEnabled",
    "MfaRequired",
    "RegistrationClosed",
    "SessionNotFound",
    "TokenReused",
    "UnknownProvider",
    "WrongMfaCode",
]


class InvalidCredentials(AppError):
    status_code = 401
    code = "invalid_credentials"
    title = "Invalid credentials"
    default_detail = "The email or password is incorrect."

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": "Bearer"})


class EmailNotVerified(AppError):
    status_code = 403
    code = "email_not_verified"
    title = "Email not verified"
    default_detail = "Verify your email address first; the link is in the email we sent."


class AccountInactive(AppError):
    status_code = 403
    code = "account_inactive"
    title = "Account inactive"
    default_detail = "This account is deactivated."


class InvalidRefreshToken(InvalidToken):
    default_detail = "The refresh token is invalid, expired or revoked; sign in again."


class TokenReused(AppError):
    """An already-rotated refresh token: the session is ended (OAuth 2.0 Security BCP)."""

    status_code = 401
    code = "token_reused"
    title = "Refresh token reused"
    default_detail = "This refresh token was already used; the session has been ended."

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class SessionNotFound(NotFound):
    default_detail = "No such session."


class AccountLocked(AppError):
    status_code = 429
    code = "account_locked"
    title = "Account locked"
    default_detail = (
        "Too many failed sign-in attempts: the account is locked for a while. Try again "
        "after Retry-After seconds, or reset the password."
    )

    def __init__(self, retry_after: int) -> None:
        super().__init__(headers={"Retry-After": str(max(1, retry_after))})


class InvalidMfaCode(AppError):
    """A code that does not confirm a new authenticator."""

    status_code = 400
    code = "invalid_mfa_code"
    title = "Invalid code"
    default_detail = "The code is not valid: enter the current code your authenticator app shows."


class WrongMfaCode(InvalidMfaCode):
    """The second step of a login failed: 401, as a wrong password is."""

    status_code = 401
    default_detail = "The code is not valid: enter the current code or a recovery code."

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": "Bearer"})


class InvalidMfaToken(AppError):
    status_code = 401
    code = "invalid_mfa_token"
    title = "Invalid MFA token"
    default_detail = (
        "This sign-in step is used up, expired or unknown; sign in with your password again."
    )

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": "Bearer"})


class MfaAlreadyEnabled(Conflict):
    code = "mfa_already_enabled"
    title = "MFA already enabled"
    default_detail = (
        "Two-step verification is already on; turn it off first to set up another authenticator."
    )


class MfaNotEnabled(Conflict):
    code = "mfa_not_enabled"
    title = "MFA not enabled"
    default_detail = "Two-step verification is not on for this account."


class CsrfFailed(AppError):
    """A cookie-transport request without the CSRF proof, or from a foreign origin."""

    status_code = 403
    code = "csrf_failed"
    title = "CSRF check failed"
    default_detail = (
        "Send the X-CSRF-Token header with the value of the __Host-aixiate_csrf cookie "
        "(or the X-CSRF-Token header of the last token answer), from an allowed origin."
    )


# --- social login -----------------------------------------------------------------------


class UnknownProvider(NotFound):
    default_detail = "No such sign-in provider."


class InvalidRedirectUri(BadRequest):
    code = "invalid_redirect_uri"
    title = "Redirect URI not allowed"
    default_detail = (
        "The redirect_uri is not one of the front-end URLs this service may send users "
        "back to (AIXIATE_OAUTH_REDIRECT_URLS)."
    )


class InvalidOAuthState(BadRequest):
    """A callback whose ``state`` is missing, unknown, used or expired: there is no
    trustworthy place to send the browser back to, so it gets a problem."""

    code = "invalid_state"
    title = "Invalid state"
    default_detail = "This sign-in attempt is unknown, used up or expired; start again."


class InvalidExchangeCode(BadRequest):
    code = "invalid_exchange_code"
    title = "Invalid exchange code"
    default_detail = "The code is used up, expired or unknown; sign in again."


class InvalidLinkToken(BadRequest):
    code = "invalid_link_token"
    title = "Invalid link token"
    default_detail = "The link token is used up, expired or unknown; sign in again."


class LinkRequired(Conflict):
    """An account with the provider's address exists: it is linked only once its owner
    proves who they are (``POST /auth/oauth/link``), never silently."""

    code = "link_required"
    title = "Link required"
    default_detail = (
        "An account with this email address exists. Sign in to it with its password to "
        "link this provider: POST /auth/oauth/link with the link_token."
    )


class IdentityTaken(Conflict):
    code = "identity_taken"
    title = "Identity taken"
    default_detail = "That provider account is already linked to another account."


class IdentityNotFound(NotFound):
    default_detail = "No identity of that provider is linked to this account."


class LastCredential(Conflict):
    code = "last_credential"
    title = "Last way in"
    default_detail = (
        "This is the account's only way to sign in: set a password or link another provider first."
    )


class RegistrationClosed(AppError):
    """The same answer for every address a rule refuses: it says nothing about accounts."""

    status_code = 403
    code = "registration_closed"
    title = "Registration closed"
    default_detail = "New accounts cannot be created with this address here."
