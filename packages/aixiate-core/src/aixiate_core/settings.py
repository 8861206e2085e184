"""Service-wide settings: every variable is ``AIXIATE_<FIELD>``, also read from ``.env``."""

import ipaddress
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["development", "test", "production"]
#: What a guard does when its shared store (Redis) does not answer: let the request
#: through unchecked, or refuse it with 503 ``service_unavailable``.
FailMode = Literal["fail_open", "fail_closed"]

#: Where a development secret key is kept so that restarts keep stored secrets readable.
DEV_SECRET_FILE = Path(".aixiate-dev-secret")
MIN_SECRET_KEY_LENGTH = 32
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./aixiate.db"


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased, default ports dropped, as a
    browser writes it in ``Origin``; "" for something that is not an http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


class UnsafeSettingsError(ValueError):
    """Raised when production is asked to run on a setting that is unsafe there."""


#: Every package's settings class uses this: one prefix (the documented variables are all
#: AIXIATE_*, whichever package reads them), one .env file. Each variable is parsed by
#: exactly one class.
SETTINGS_CONFIG = SettingsConfigDict(
    env_prefix="AIXIATE_",
    env_file=".env",
    env_file_encoding="utf-8",
    extra="ignore",
    validate_default=True,
)


class Settings(BaseSettings):
    model_config = SETTINGS_CONFIG

    env: Environment = "development"
    debug: bool = False

    database_url: str = DEFAULT_DATABASE_URL
    database_pool_size: int = Field(default=10, ge=1)
    database_max_overflow: int = Field(default=10, ge=0)
    database_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    database_pool_recycle_seconds: int = Field(default=1800, ge=-1)
    # Test a pooled connection before use when it has sat idle this long (a database
    # restarted meanwhile would fail the request otherwise). Not on every checkout: the
    # asyncpg ping costs three round trips, and a busy connection was just proven live.
    database_pool_pre_ping: bool = True
    database_pool_pre_ping_idle_seconds: float = Field(default=1.0, ge=0)
    database_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    database_echo: bool = False

    redis_url: str | None = None
    redis_key_prefix: str = "aixiate:"
    redis_timeout_seconds: float = Field(default=2.0, gt=0)

    secret_key: SecretStr | None = None
    product_name: str = Field(default="Aixiate", min_length=1, max_length=80)
    public_url: str = "http://localhost:3000"
    # The API's own public base URL: where OAuth providers send users back to.
    api_url: str = "http://localhost:8000"
    email_from: str = "Aixiate <no-reply@localhost>"
    resend_api_key: SecretStr | None = None
    resend_base_url: str = "https://api.resend.com"

    # The email outbox dispatcher (runs in every API process unless disabled, or alone
    # as `aixiate worker`).
    outbox_dispatcher_enabled: bool = True
    outbox_poll_seconds: float = Field(default=2.0, gt=0)
    outbox_batch_size: int = Field(default=20, ge=1, le=500)
    outbox_max_attempts: int = Field(default=8, ge=1)
    outbox_backoff_base_seconds: float = Field(default=5.0, gt=0)
    outbox_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    outbox_lease_seconds: float = Field(default=60.0, gt=0)

    # Purging expired sessions and tokens and delivered email (one process per round).
    housekeeping_enabled: bool = True
    housekeeping_interval_seconds: float = Field(default=3600.0, ge=10)
    # Delivered or failed outbox rows (bodies are wiped at once) are kept this long.
    outbox_retention_days: int = Field(default=7, ge=1)

    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Origins of browser apps allowed to call the API with credentials (CORS), e.g.
    # "https://app.example.com,http://localhost:3000". Empty: no CORS headers at all.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    cors_max_age_seconds: int = Field(default=600, ge=0, le=86400)

    # Roles whose routes also need a second factor: a caller holding one of them whose
    # token lacks "mfa" in its amr gets 403 mfa_required there (aixiate_core.security).
    mfa_required_roles: Annotated[frozenset[str], NoDecode] = Field(default_factory=frozenset)

    # Rate limits (aixiate_core.ratelimit), in the ``limits`` syntax: "10/minute", several
    # joined by ";" ("10/minute;100/hour"); an empty string turns that one limit off.
    # Per client IP (IPv6 per /64) and per target account (the address, keyed hashed).
    rate_limit_enabled: bool = True
    rate_limit_strategy: Literal["sliding-window-counter", "moving-window"] = (
        "sliding-window-counter"
    )
    rate_limit_fail_mode: FailMode = "fail_closed"
    rate_limit_global: str = "600/minute"
    rate_limit_global_fail_mode: FailMode = "fail_open"
    rate_limit_login_per_ip: str = "20/minute;200/hour"
    rate_limit_login_per_account: str = "10/minute;50/hour"
    rate_limit_refresh_per_ip: str = "60/minute"
    rate_limit_register_per_ip: str = "10/minute;50/hour"
    rate_limit_register_per_account: str = "3/hour"
    rate_limit_password_forgot_per_ip: str = "10/minute;50/hour"  # noqa: S105 - a rate
    rate_limit_password_forgot_per_account: str = "3/hour"  # noqa: S105 - a rate
    rate_limit_password_reset_per_ip: str = "10/minute;50/hour"  # noqa: S105 - a rate
    rate_limit_verify_email_resend_per_ip: str = "10/minute;50/hour"
    rate_limit_verify_email_resend_per_account: str = "3/hour"
    rate_limit_oauth_per_ip: str = "30/minute;300/hour"
    rate_limit_mfa_per_ip: str = "20/minute;100/hour"
    rate_limit_mfa_per_account: str = "10/minute;30/hour"

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    health_timeout_seconds: float = Field(default=1.5, gt=0, le=10)

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_database_is_default(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return DEFAULT_DATABASE_URL
        return value

    @field_validator("redis_url", mode="before")
    @classmethod
    def _blank_redis_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        # Accept the natural env form "10.0.0.1, 10.0.1.0/24" as well as a JSON list.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("mfa_required_roles", mode="before")
    @classmethod
    def _split_roles(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # An origin is exactly scheme://host[:port]: a path, a wildcard or a trailing
        # slash would never match what a browser sends, or match far too much.
        for origin in value:
            if origin_of(origin) != origin:
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port], nothing more"
                )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)
        return value

    @model_validator(mode="after")
    def _check_rate_limits(self) -> Self:
        for name, value in self.rate_limits().items():
            try:
                parse_many(value)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return self

    def rate_limits(self) -> dict[str, str]:
        """The configured limits by setting name: ``rate_limit_global`` and every
        ``rate_limit_<name>_per_<scope>`` that is not empty."""
        return {
            name: value.strip()
            for name, field in type(self).model_fields.items()
            if name.startswith("rate_limit_")
            and field.annotation is str
            and (value := getattr(self, name)).strip()
        }

    @field_validator("public_url", "resend_base_url", "api_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @property
    def browser_origins(self) -> frozenset[str]:
        """Origins whose pages may use the API's cookies: the CORS origins and the front
        end's own (``public_url``)."""
        return frozenset({*self.cors_origins, origin_of(self.public_url)})

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def json_logs(self) -> bool:
        if self.log_format == "auto":
            return self.env == "production"
        return self.log_format == "json"

    def check_safe(self) -> None:
        """Refuse settings that must never reach production; one line names the variable."""
        if self.env != "production":
            return
        if self.secret_key is None:
            raise UnsafeSettingsError("AIXIATE_SECRET_KEY must be set in production")
        if len(self.secret_key.get_secret_value()) < MIN_SECRET_KEY_LENGTH:
            raise UnsafeSettingsError(
                f"AIXIATE_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters"
            )
        if self.debug:
            raise UnsafeSettingsError("AIXIATE_DEBUG must be false in production")
        if self.is_sqlite:
            raise UnsafeSettingsError(
                "AIXIATE_DATABASE_URL must point to PostgreSQL in production, not SQLite"
            )

    def secret(self) -> str:
        """The secret key; outside production one is made up (and kept, in development)."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        if self.env == "production":
            raise UnsafeSettingsError("AIXIATE_SECRET_KEY must be set in production")
        generated = secrets.token_urlsafe(48) if self.env == "test" else _dev_secret()
        self.secret_key = SecretStr(generated)
        return generated


def _dev_secret() -> str:
    try:
        return DEV_SECRET_FILE.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        value = secrets.token_urlsafe(48)
        fd = os.open(DEV_SECRET_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value)
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
