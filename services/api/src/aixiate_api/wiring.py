"""Who listens to which domain event: the one place packages are connected sideways."""

from aixiate_audit import service as audit_service
from aixiate_auth import subscribers as auth_subscribers
from aixiate_auth.runtime import AuthRuntime
from aixiate_core.events import DomainEvents, EmailDeliveryFailed


def subscribe_all(events: DomainEvents, auth: AuthRuntime | None = None) -> DomainEvents:
    """``auth`` is None in processes that serve no requests (``aixiate worker``)."""
    events.subscribe(EmailDeliveryFailed, audit_service.on_email_delivery_failed)
    if auth is not None:
        auth_subscribers.subscribe(events, auth)
    return events
