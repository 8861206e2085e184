"""Settings of the users package: ``AIXIATE_<FIELD>``, also read from ``.env``.

The prefix is the service's own, not ``AIXIATE_USERS_``: the variable names are part of
the documented configuration. Every setting is parsed here and nowhere else; aixiate-auth
reads the verification TTL and the password settings from this class.
"""

import os
from datetime import timedelta
from functools import lru_cache
from typing import Self

from aixiate_core.settings import SETTINGS_CONFIG
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

#: NIST SP 800-63B: a chosen password has at least 8 characters, whatever is configured.
MIN_PASSWORD_LENGTH_FLOOR = 8
#: The most characters any password field accepts before anything else looks at it: it
#: bounds the work of normalising and hashing. The policy's maximum judges new passwords.
MAX_PASSWORD_INPUT = 1024


def _default_hash_workers() -> int:
    # One core stays free for the event loop (and the database next to it): hashing must
    # never starve request handling. One worker on a one- or two-core machine.
    return max(1, (os.cpu_count() or 2) - 1)


class UsersSettings(BaseSettings):
    model_config = SETTINGS_CONFIG

    #: How long a verification or email-change link works.
    email_verification_ttl_seconds: int = Field(default=86400, ge=60, le=30 * 86400)

    password_min_length: int = Field(default=12, ge=MIN_PASSWORD_LENGTH_FLOOR)
    password_max_length: int = Field(
        default=128, ge=MIN_PASSWORD_LENGTH_FLOOR, le=MAX_PASSWORD_INPUT
    )

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

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.password_min_length > self.password_max_length:
            raise ValueError("password_min_length must not exceed password_max_length")
        if self.argon2_memory_kib < 8 * self.argon2_parallelism:
            raise ValueError("argon2_memory_kib must be at least 8 x argon2_parallelism")
        return self

    @property
    def email_verification_ttl(self) -> timedelta:
        return timedelta(seconds=self.email_verification_ttl_seconds)

    @property
    def email_change_ttl(self) -> timedelta:
        return self.email_verification_ttl


@lru_cache
def get_users_settings() -> UsersSettings:
    return UsersSettings()
