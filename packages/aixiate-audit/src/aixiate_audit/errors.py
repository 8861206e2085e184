"""Domain errors of the audit package; core's handlers render them as RFC 9457 problems."""

from typing import Any

from aixiate_core import pagination
from aixiate_core.errors import PROBLEM_CONTENT_TYPE, AppError, NotFound


class AuditEventNotFound(NotFound):
    default_detail = "No audit event has this id."


# Shared with every keyset listing; re-exported for this package's routes.
InvalidCursor = pagination.InvalidCursor


def problem_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of an admin route: its problems, plus 401, 403 and 422."""
    entries = [(e.status_code, f"`{e.code}`: {e.default_detail}") for e in errors]
    entries += [
        (401, "`not_authenticated` / `invalid_token`: the bearer token is missing or bad."),
        (403, "`forbidden`: the caller lacks the admin role."),
        (422, "`validation_error`: a query parameter is not valid; `errors` lists each."),
    ]
    by_status: dict[int, list[str]] = {}
    for status, line in entries:
        by_status.setdefault(status, []).append(line)
    return {
        status: {"description": "\n\n".join(lines), "content": {PROBLEM_CONTENT_TYPE: {}}}
        for status, lines in sorted(by_status.items())
    }
