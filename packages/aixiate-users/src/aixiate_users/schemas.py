"""Request and response bodies of ``/users``. Table models never double as either.

Request bodies are strict: unknown fields are rejected (a stray ``"roles"`` in a PATCH of
``/me`` must fail loudly, not be ignored), and values are not coerced (``"yes"`` is not
a boolean).
"""

import unicodedata
from datetime import datetime
from typing import Annotated, ClassVar
from uuid import UUID

from aixiate_core.schemas import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    ValidationInfo,
    field_validator,
)

from aixiate_users.settings import MAX_PASSWORD_INPUT

ROLE_PATTERN = r"^[a-z][a-z0-9_:.-]{0,49}$"
MAX_ROLES = 20
MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 320

# Bidirectional embeddings, overrides and isolates let a name display as something else
# ("evil\u202egnp.exe"); no real name needs them. Joiners (U+200C/U+200D) stay allowed:
# Persian, Hindi and emoji sequences use them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_REJECTED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def reject_control_characters(value: str) -> str:
    """Refuses what would corrupt logs, emails or terminals: C0/C1 controls (NUL, newlines,
    ANSI escapes), lone surrogates, line separators and bidi overrides."""
    for char in value:
        if char in _BIDI_CONTROLS or unicodedata.category(char) in _REJECTED_CATEGORIES:
            raise ValueError(f"must not contain control characters (found U+{ord(char):04X})")
    return value


def _strip_name(value: object) -> object:
    # Surrounding blanks are never meant; an all-blank name clears it.
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _plain_address(value: object) -> object:
    # EmailStr also accepts "Name <addr>"; an account address is the bare address only.
    if isinstance(value, str) and ("<" in value or ">" in value):
        raise ValueError("give the bare address, without a display name")
    return value


def _no_control_characters(value: str | None) -> str | None:
    return None if value is None else reject_control_characters(value)


def _dedupe(roles: list[str]) -> list[str]:
    return list(dict.fromkeys(roles))


#: Stored and shown as given (SQL or HTML in a name is harmless: queries are bound and
#: HTML emails autoescape), only trimmed; blank means no name.
FullName = Annotated[
    Annotated[str, Field(max_length=MAX_NAME_LENGTH), AfterValidator(reject_control_characters)]
    | None,
    BeforeValidator(_strip_name),
]
Email = Annotated[EmailStr, BeforeValidator(_plain_address), Field(max_length=MAX_EMAIL_LENGTH)]
# Every password field, new or confirming: min_length=1 only, because the policy (length,
# breached lists) is Passwords.check_policy's, which answers 422 weak_password with the
# reason; the cap bounds the work of normalising and hashing before anything else runs.
Password = Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_INPUT)]
Role = Annotated[str, Field(pattern=ROLE_PATTERN)]
Roles = Annotated[list[Role], Field(max_length=MAX_ROLES), AfterValidator(_dedupe)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Patch(_Body):
    """Fields are optional by omission; an explicit ``null`` is accepted only where it
    means something (clearing the name), never for roles or flags."""

    nullable_fields: ClassVar[frozenset[str]] = frozenset({"full_name"})

    @field_validator("*", mode="before")
    @classmethod
    def _null_only_where_nullable(cls, value: object, info: ValidationInfo) -> object:
        if value is None and info.field_name not in cls.nullable_fields:
            raise ValueError("may be omitted but not null")
        return value


class UserRead(BaseModel):
    """A user as every client sees it: never a password hash, token or secret."""

    model_config = ConfigDict(from_attributes=True)

    id: UUID
    email: str
    full_name: str | None
    roles: list[str]
    is_active: bool
    is_verified: bool
    mfa_enabled: bool
    created_at: datetime
    updated_at: datetime


class UserUpdate(_Patch):
    full_name: FullName = None


class EmailChangeRequest(_Body):
    new_email: Email
    password: Password


#: Emailed tokens are 43 characters; anything far longer is not one of ours.
MAX_TOKEN_LENGTH = 256

EmailedToken = Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_LENGTH)]


class EmailChangeConfirmation(_Body):
    token: EmailedToken


class PasswordConfirmation(_Body):
    password: Password


class AdminUserCreate(_Body):
    email: Email
    password: Password
    full_name: FullName = None
    roles: Roles = Field(default_factory=list)
    is_verified: bool = False


class AdminUserUpdate(_Patch):
    full_name: FullName = None
    roles: Roles | None = None
    is_active: bool | None = None
    is_verified: bool | None = None


class UserListQuery(BaseModel):
    """Filters and paging of the admin user list (query parameters)."""

    q: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=MAX_EMAIL_LENGTH,
            description="Case-insensitive substring of the email or the full name.",
        ),
        AfterValidator(_no_control_characters),
    ] = None
    role: Annotated[
        str | None, Field(pattern=ROLE_PATTERN, description="Only users holding this role.")
    ] = None
    is_active: bool | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE
    cursor: Annotated[
        str | None,
        Field(
            max_length=512,
            description="The next_cursor of the previous page; omit for the first page.",
        ),
    ] = None
