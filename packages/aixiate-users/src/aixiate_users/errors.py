"""Domain errors of the users package; core's handlers render them as RFC 9457 problems."""

from aixiate_core import pagination
from aixiate_core.errors import AppError, BadRequest, Conflict, NotFound


class UserNotFound(NotFound):
    default_detail = "No user has this id."


class EmailTaken(Conflict):
    code = "email_taken"
    title = "Email taken"
    default_detail = "Another account already uses this email address."


class CannotModifySelf(Conflict):
    code = "cannot_modify_self"
    title = "Cannot modify own account"
    default_detail = (
        "Administrators cannot delete or deactivate their own account, nor remove their "
        "own admin role; ask another administrator."
    )


class InvalidPassword(AppError):
    """The caller is authenticated, but the password confirming a sensitive change is wrong.

    403, not 401: the bearer token is fine, so a client must not treat this as a logged-out
    session and throw its tokens away; it just asks the user for the password again.
    """

    status_code = 403
    code = "invalid_password"
    title = "Invalid password"
    default_detail = "The password is incorrect."


class WeakPassword(AppError):
    """A new password the policy refuses; ``extra["reason"]`` says why."""

    status_code = 422
    code = "weak_password"
    title = "Weak password"
    default_detail = "The password does not meet the password policy."


class EmailUnchanged(BadRequest):
    code = "email_unchanged"
    title = "Email unchanged"
    default_detail = "The new email address is the current one."


# Shared with every keyset listing; re-exported for this package's routes.
InvalidCursor = pagination.InvalidCursor


class InvalidActionToken(BadRequest):
    """A link from an email (verification, reset, email change) that is unknown, used,
    expired or of another purpose: one answer for all, so a guesser learns nothing.
    400, not 401 ``invalid_token``: these tokens travel in the body, and a 401 would send
    clients looking for a bearer token to refresh."""

    code = "invalid_or_expired_token"
    title = "Invalid or expired link"
    default_detail = "The link is invalid, has expired or was already used; request a new one."
