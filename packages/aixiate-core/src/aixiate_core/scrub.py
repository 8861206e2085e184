"""One scrubber for everything that leaves the process as text: log lines and audit data.

A value is redacted when its key names a secret (password, token, secret, hash,
authorization, TOTP, code, cookie, API key) or when it looks like one whatever its key
(a JWT, an argon2 or bcrypt hash, a ``Bearer`` credential). Only strings and containers
are redacted: a boolean or a number under a secret-sounding key (``rehashed``,
``status_code``) cannot carry a secret and stays readable.
"""

import re
from collections.abc import Mapping, MutableMapping
from typing import Any

REDACTED = "[redacted]"

SENSITIVE_KEY = re.compile(
    r"password|passwd|token|secret|hash|authorization|totp|code|cookie|api_?key",
    re.IGNORECASE,
)
# A JWT (three base64url segments, the first a JSON header), a PHC argon2 string, a
# bcrypt hash, and a bearer credential: each redacted where it appears inside a string.
_SECRET_VALUES = re.compile(
    r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
    r"|\$argon2(?:id|i|d)\$[^\s\"';]+"
    r"|\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
)
_MAX_DEPTH = 8


def is_sensitive_key(key: object) -> bool:
    return isinstance(key, str) and SENSITIVE_KEY.search(key) is not None


def scrub_text(text: str) -> str:
    """``text`` with every secret-looking part replaced."""
    return _SECRET_VALUES.sub(REDACTED, text)


def scrub(value: Any, *, key: object = None, _depth: int = 0) -> Any:
    """A copy of ``value`` with secrets redacted, recursively (dicts, lists, tuples)."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    if is_sensitive_key(key):
        return REDACTED
    if _depth > _MAX_DEPTH:
        return REDACTED
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, bytes | bytearray):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: scrub(v, key=k, _depth=_depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(item, _depth=_depth + 1) for item in value]
    return value


# structlog keys that are ours, not data: never redacted by name.
_LOG_META_KEYS = frozenset({"event", "level", "logger", "timestamp", "exc_info", "stack_info"})


def scrub_log_event(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redacts secrets in every field of a log line."""
    for key, value in list(event_dict.items()):
        if key in _LOG_META_KEYS:
            if key == "event" and isinstance(value, str):
                event_dict[key] = scrub_text(value)
            continue
        event_dict[key] = scrub(value, key=key)
    return event_dict
