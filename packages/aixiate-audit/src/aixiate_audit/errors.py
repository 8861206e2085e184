"""Domain errors of the audit package; core's handlers render them as RFC 9457 problems."""

from aixiate_core import pagination
from aixiate_core.errors import NotFound


class AuditEventNotFound(NotFound):
    default_detail = "No audit event has this id."


# Shared with every keyset listing; re-exported for this package's routes.
InvalidCursor = pagination.InvalidCursor
