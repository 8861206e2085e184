"""Settings of the auth package: ``AIXIATE_<FIELD>``, also read from ``.env``.

The prefix is the service's own (not ``AIXIATE_AUTH_``): names such as
``AIXIATE_REQUIRE_EMAIL_VERIFICATION`` are part of the documented configuration. Password
and verification-link settings belong to ``aixiate_users.settings.UsersSettings``.
"""

from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Literal, Self

from aixiate_core.settings import SETTINGS_CONFIG, FailMode
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from aixiate_auth.oauth import Provider, ProviderSettings, RedirectAllowList, resolve_providers


class AuthSettings(BaseSettings):
    model_config = SETTINGS_CONFIG

    # Tokens.
    issuer: str = Field(default="aixiate", min_length=1)
    audience: str = Field(default="aixiate-api", min_length=1)
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86400)
    # The idle lifetime of a session: each refresh slides it forward by this much.
    refresh_token_ttl_seconds: int = Field(default=2592000, ge=300)
    # The absolute lifetime of a session: refreshing never extends it past this.
    session_absolute_ttl_seconds: int = Field(default=7776000, ge=300)
    # How many verified access tokens each process remembers, so that a token sent again
    # skips the signature check (liveness is still checked every time); 0 turns it off.
    access_token_cache_size: int = Field(default=10_000, ge=0)
    # Clock skew tolerated on exp/iat/nbf.
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # How often each process re-reads the signing keys (rotation elsewhere shows up
    # within this; a token with an unknown kid triggers an earlier re-read).
    key_reload_seconds: float = Field(default=60.0, gt=0)
    # last_used_at of a session is written at most this often.
    session_touch_interval_seconds: float = Field(default=60.0, gt=0)

    require_email_verification: bool = True

    # Who may create an account: anyone (open), only people an admin invited (invite),
    # or nobody (closed; admins still create and invite). With email domains, only
    # addresses in them may register, here or through a provider.
    registration: Literal["open", "invite", "closed"] = "open"
    registration_email_domains: Annotated[tuple[str, ...], NoDecode] = ()
    invite_ttl_seconds: int = Field(default=604800, ge=3600)
    password_reset_ttl_seconds: int = Field(default=3600, ge=60)

    # Account lockout after failed logins (aixiate_auth.lockout), in the spirit of
    # Keycloak's brute-force detection: N failures within the window lock the account for
    # the base time, doubling with each lock that follows within the reset period, capped.
    lockout_enabled: bool = True
    lockout_max_failures: int = Field(default=5, ge=1)
    lockout_window_seconds: int = Field(default=900, ge=1)
    lockout_base_seconds: int = Field(default=60, ge=1)
    lockout_max_seconds: int = Field(default=900, ge=1)
    lockout_reset_seconds: int = Field(default=43200, ge=0)
    lockout_fail_mode: FailMode = "fail_closed"

    # Social login: providers by name (JSON; google, github and microsoft are presets
    # that need only client_id and client_secret), and the front-end URLs a flow may
    # return to (comma-separated; empty: AIXIATE_PUBLIC_URL and the paths below it).
    oauth_providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    oauth_redirect_urls: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("registration_email_domains", mode="before")
    @classmethod
    def _split_domains(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            return tuple(str(d).strip().lower().removeprefix("@") for d in value if str(d).strip())
        return value

    @field_validator("oauth_redirect_urls", mode="before")
    @classmethod
    def _split_redirects(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("oauth_redirect_urls")
    @classmethod
    def _check_redirects(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        RedirectAllowList(value)  # raises ValueError naming a bad entry
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        self.providers()  # raises ValueError naming a bad provider
        if self.session_absolute_ttl_seconds < self.refresh_token_ttl_seconds:
            raise ValueError(
                "session_absolute_ttl_seconds must be at least refresh_token_ttl_seconds"
            )
        if self.lockout_base_seconds > self.lockout_max_seconds:
            raise ValueError("lockout_base_seconds must not exceed lockout_max_seconds")
        return self

    def providers(self) -> dict[str, Provider]:
        return resolve_providers(self.oauth_providers)

    def may_register(self, email: str) -> bool:
        """Whether ``email`` may create an account by itself (a sign-up, or a first
        sign-in through a provider); invitations are the admins' way around it."""
        if self.registration != "open":
            return False
        if not self.registration_email_domains:
            return True
        return email.rsplit("@", 1)[-1].lower() in self.registration_email_domains

    @property
    def invite_ttl(self) -> timedelta:
        return timedelta(seconds=self.invite_ttl_seconds)

    @property
    def password_reset_ttl(self) -> timedelta:
        return timedelta(seconds=self.password_reset_ttl_seconds)


@lru_cache
def get_auth_settings() -> AuthSettings:
    return AuthSettings()
