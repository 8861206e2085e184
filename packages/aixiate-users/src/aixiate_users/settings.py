"""Settings of the users package, read lazily from ``AIXIATE_*`` like the core's."""

from datetime import timedelta
from functools import lru_cache
from typing import Annotated

from aixiate_core.settings import SETTINGS_CONFIG
from fastapi import Depends
from pydantic import Field
from pydantic_settings import BaseSettings


class UsersSettings(BaseSettings):
    # The same prefix as the core on purpose: API.md names AIXIATE_EMAIL_VERIFICATION_TTL_SECONDS
    # for verification and email-change links alike, and aixiate-auth reads it too.
    model_config = SETTINGS_CONFIG

    #: How long an email-change confirmation link works (API.md: the verification TTL).
    email_verification_ttl_seconds: int = Field(default=86400, ge=60, le=30 * 86400)

    @property
    def email_change_ttl(self) -> timedelta:
        return timedelta(seconds=self.email_verification_ttl_seconds)


@lru_cache
def get_users_settings() -> UsersSettings:
    return UsersSettings()


UsersSettingsDep = Annotated[UsersSettings, Depends(get_users_settings)]
