"""Request bodies of ``/auth``.

Addresses, names and the user view are the users package's, so the same
input rules hold on every route. Passwords are plain strings here on purpose: their
length and content are the password policy's to judge, so a too-long password answers
422 ``weak_password`` with its reason, as API.md prescribes (the request body limit
bounds the work, and the policy runs before any hashing).
"""

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from aixiate_core.schemas import Accepted
from aixiate_users.schemas import Email, FullName, UserRead
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Accepted",
    "EmailChangeConfirmation",
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

#: Emailed tokens are 43 characters; anything far longer is not one of ours.
MAX_TOKEN_LENGTH = 256

EmailedToken = Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_LENGTH)]


class _Body(BaseModel):
    # As in users: unknown fields are refused (a "roles" sent at registration must fail
    # loudly, not be ignored) and nothing is coerced.
    model_config = ConfigDict(extra="forbid", strict=True)


class Registration(_Body):
    email: Email
    password: str
    full_name: FullName = None


class EmailVerification(_Body):
    token: EmailedToken


class VerificationResend(_Body):
    email: Email


class EmailChangeConfirmation(_Body):
    token: EmailedToken


#: Refresh tokens are 43 characters of base64url.
RefreshTokenValue = Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_LENGTH)]
#: Long enough for any password the policy accepts; the policy judges new passwords.
PasswordValue = Annotated[str, Field(min_length=1, max_length=1024)]


class Login(_Body):
    email: Annotated[str, Field(min_length=1, max_length=320)]
    password: PasswordValue


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
    new_password: str


class PasswordChange(_Body):
    current_password: PasswordValue
    new_password: str
