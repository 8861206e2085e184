"""Settings of the audit package, read lazily from ``AIXIATE_*`` like the core's."""

from functools import lru_cache

from aixiate_core.settings import SETTINGS_CONFIG
from pydantic import Field
from pydantic_settings import BaseSettings


class AuditSettings(BaseSettings):
    model_config = SETTINGS_CONFIG

    #: Events older than this are pruned (whole months on PostgreSQL).
    audit_retention_days: int = Field(default=365, ge=1)
    #: Monthly partitions kept ready ahead of the current month (PostgreSQL).
    audit_partitions_ahead: int = Field(default=3, ge=1, le=24)
    #: Housekeeping prunes and creates partitions. Turn off when the app's database role
    #: may only INSERT/SELECT the audit table; run ``aixiate audit prune`` as the owner.
    audit_housekeeping_enabled: bool = True


@lru_cache
def get_audit_settings() -> AuditSettings:
    return AuditSettings()
