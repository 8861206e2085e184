"""Request and response bodies of ``/auth``.

Addresses, names, passwords, emailed tokens and the user view are the users package's,
so the same input rules hold on every route: every password field takes up to
``MAX_PASSWORD_INPUT`` characters, and the password policy judges new passwords (a
too-long one answers 422 ``weak_password`` with its reason).
"""

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from aixiate_core.schemas import Accepted
from aixiate_users.schemas import Email, EmailedToken, FullName, Password, Roles, UserRead
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Accepted",
    "EmailVerification",
    "Login",
    "MfaChallenge",
    "MfaCode",
    "MfaLogin",
    "MfaPassword",
    "MfaStatus",
    "PasswordChange",
    "PasswordForgot",
    "PasswordReset",
    "RecoveryCodes",
    "RefreshRequest",
    "Registration",
    "SessionRead",
    "TokenPair",
    "TotpSetup",
    "UserRead",
    "VerificationResend",
]

#: Refresh tokens are 43 characters of base64url; anything far longer is not one of ours.
MAX_TOKEN_LENGTH = 256


class _Body(BaseModel):
    # As in users: unknown fields are refused (a "roles" sent at registration must fail
    # loudly, not be ignored) and nothing is coerced.
    model_config = ConfigDict(extra="forbid", strict=True)


class Registration(_Body):
    email: Email
    password: Password
    full_name: FullName = None


class EmailVerification(_Body):
    token: EmailedToken


class VerificationResend(_Body):
    email: Email


RefreshTokenValue = Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_LENGTH)]


class Login(_Body):
    email: Annotated[str, Field(min_length=1, max_length=320)]
    password: Password


class TokenPair(BaseModel):
    access_token: str
    #: None with ``?transport=cookie``: the refresh token is then in an HttpOnly cookie.
    refresh_token: str | None
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type
    expires_in: int
    refresh_expires_in: int


class RefreshRequest(_Body):
    refresh_token: RefreshTokenValue


class SessionRead(BaseModel):
    id: UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool


class PasswordForgot(_Body):
    email: Email


class PasswordReset(_Body):
    token: EmailedToken
    new_password: Password


class PasswordChange(_Body):
    current_password: Password
    new_password: Password


# --- multi-factor authentication ------------------------------------------------------

#: A TOTP code is 6 digits and a recovery code 19 characters; room for spaces, no more.
MfaCodeValue = Annotated[str, Field(min_length=1, max_length=64)]


class MfaStatus(BaseModel):
    enabled: bool
    #: The second factors the account can use: ``totp``, ``recovery_code``.
    methods: list[str]
    recovery_codes_remaining: int


class TotpSetup(BaseModel):
    """A new secret to enter into an authenticator app, as text or as a QR code."""

    #: Base32, 160 bits: for typing into an app by hand.
    secret: str
    #: The ``otpauth://totp/...`` URI that apps read from the QR code.
    otpauth_uri: str
    #: The QR code of ``otpauth_uri`` as a standalone SVG document.
    qr_svg: str


class MfaCode(_Body):
    code: MfaCodeValue


class MfaPassword(_Body):
    password: Password


class RecoveryCodes(BaseModel):
    """Shown once: only their hashes are kept."""

    recovery_codes: list[str]


class MfaChallenge(BaseModel):
    """The answer of a correct password for an account with MFA: no tokens yet."""

    mfa_required: Literal[True] = True
    #: Opaque and single-use; lives 5 minutes. Send it to ``POST /auth/login/mfa``.
    mfa_token: str
    mfa_methods: list[str]


class MfaLogin(_Body):
    mfa_token: RefreshTokenValue
    code: MfaCodeValue


# --- social login -----------------------------------------------------------------------

#: Exchange codes and link tokens are 43 characters of base64url.
FlowHandle = Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_LENGTH)]
#: A front-end URL to return to; the allow-list judges it.
ReturnUrl = Annotated[str, Field(min_length=1, max_length=2048)]


class ProviderRead(BaseModel):
    name: str
    display_name: str


class OAuthExchange(_Body):
    code: FlowHandle


class OAuthLink(_Body):
    link_token: FlowHandle
    password: Password


class IdentityLinkStart(_Body):
    redirect_uri: ReturnUrl


class AuthorizeUrl(BaseModel):
    authorize_url: str


class IdentityRead(BaseModel):
    provider: str
    subject: str
    email: str | None
    created_at: datetime


# --- invitations --------------------------------------------------------------------------


class Invitation(_Body):
    email: Email
    full_name: FullName = None
    roles: Roles = Field(default_factory=list)


class InvitationAccept(_Body):
    token: EmailedToken
    password: Password
