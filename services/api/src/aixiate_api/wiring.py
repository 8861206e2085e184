"""Who listens to which domain event: the one place packages are connected sideways."""

from aixiate_audit import service as audit_service
from aixiate_core.events import DomainEvents, EmailDeliveryFailed


def subscribe_all(events: DomainEvents) -> DomainEvents:
    events.subscribe(EmailDeliveryFailed, audit_service.on_email_delivery_failed)
    return events
