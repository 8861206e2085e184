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
from aixiate_users.schemas import Email, EmailedToken, FullName, Password, UserRead
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Accepted",
    "EmailVerification",
    "Login",
    "PasswordChange",
    "PasswordForgot",
    "PasswordReset",
    "RefreshRequest",
    "Registration",
    "SessionRead",
    "TokenPair",
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
    refresh_token: str
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
