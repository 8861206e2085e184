"""Who listens to which domain event, and which tables housekeeping prunes: the places
packages are connected sideways. (auth subscribes to users' events itself, for as long
as its state lives: see ``aixiate_auth.state.auth_extension``.)"""

from datetime import timedelta

from aixiate_audit import retention as audit_retention
from aixiate_audit import service as audit_service
from aixiate_audit.settings import get_audit_settings
from aixiate_auth.services import sessions as auth_sessions
from aixiate_core import outbox
from aixiate_core.events import DomainEvents, EmailDeliveryFailed
from aixiate_core.housekeeping import PurgeJob
from aixiate_core.ratelimit import RateLimitExceeded
from aixiate_core.settings import Settings
from aixiate_users import action_tokens


def subscribe_all(events: DomainEvents) -> DomainEvents:
    events.subscribe(EmailDeliveryFailed, audit_service.on_email_delivery_failed)
    events.subscribe(RateLimitExceeded, audit_service.on_rate_limited)
    return events


def purge_jobs(settings: Settings) -> dict[str, PurgeJob]:
    return {
        "email_outbox": outbox.purge_job(timedelta(days=settings.outbox_retention_days)),
        "action_tokens": action_tokens.purge,
        "auth_sessions": auth_sessions.purge,
        # Partitions ahead, then drop or delete what is past retention (owner rights).
        **audit_retention.purge_jobs(get_audit_settings()),
    }
