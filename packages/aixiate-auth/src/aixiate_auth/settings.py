"""Settings of the auth package: ``AIXIATE_<FIELD>``, also read from ``.env``.

The prefix is the service's own (not ``AIXIATE_AUTH_``) because API.md fixes names such
as ``AIXIATE_REQUIRE_EMAIL_VERIFICATION`` and ``AIXIATE_PASSWORD_RESET_TTL_SECONDS``.
"""

import os
from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Self

from aixiate_core.settings import SETTINGS_CONFIG, FailMode
from fastapi import Depends
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

#: NIST SP 800-63B: a chosen password has at least 8 characters, whatever is configured.
MIN_PASSWORD_LENGTH_FLOOR = 8


def _default_hash_workers() -> int:
    # One core stays free for the event loop (and the database next to it): hashing must
    # never starve request handling. One worker on a one- or two-core machine.
    return max(1, (os.cpu_count() or 2) - 1)


class AuthSettings(BaseSettings):
    model_config = SETTINGS_CONFIG

    password_min_length: int = Field(default=12, ge=MIN_PASSWORD_LENGTH_FLOOR)
    password_max_length: int = Field(default=128, ge=MIN_PASSWORD_LENGTH_FLOOR, le=1024)

    # argon2id. The defaults are OWASP's minimum recommendation (m=19 MiB, t=2, p=1);
    # raise them as the hardware allows. Stored hashes made with other parameters are
    # re-hashed on the next successful login.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_kib: int = Field(default=19456, ge=8)
    argon2_parallelism: int = Field(default=1, ge=1)
    # Threads that hash and verify passwords, off the event loop. Each argon2 run holds
    # argon2_memory_kib while it works, so this also bounds that memory.
    password_hash_workers: int = Field(default_factory=_default_hash_workers, ge=1)
    # How much lower the CPU priority of the hash workers is than the process's (Linux
    # nice levels, per thread): when hashing and request handling want the same core,
    # requests go first; an idle core still hashes at full speed. 0 keeps them equal.
    password_hash_nice: int = Field(default=10, ge=0, le=19)

    # Tokens. API.md fixes the names of the first four.
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

    email_verification_ttl_seconds: int = Field(default=86400, ge=60)
    require_email_verification: bool = True
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

    @model_validator(mode="after")
    def _check_lengths(self) -> Self:
        if self.password_min_length > self.password_max_length:
            raise ValueError("password_min_length must not exceed password_max_length")
        if self.session_absolute_ttl_seconds < self.refresh_token_ttl_seconds:
            raise ValueError(
                "session_absolute_ttl_seconds must be at least refresh_token_ttl_seconds"
            )
        if self.lockout_base_seconds > self.lockout_max_seconds:
            raise ValueError("lockout_base_seconds must not exceed lockout_max_seconds")
        if self.argon2_memory_kib < 8 * self.argon2_parallelism:
            raise ValueError("argon2_memory_kib must be at least 8 x argon2_parallelism")
        return self

    @property
    def email_verification_ttl(self) -> timedelta:
        return timedelta(seconds=self.email_verification_ttl_seconds)

    @property
    def password_reset_ttl(self) -> timedelta:
        return timedelta(seconds=self.password_reset_ttl_seconds)


@lru_cache
def get_auth_settings() -> AuthSettings:
    return AuthSettings()


# Tests point this at their own instance with app.dependency_overrides[get_auth_settings].
AuthSettingsDep = Annotated[AuthSettings, Depends(get_auth_settings)]
