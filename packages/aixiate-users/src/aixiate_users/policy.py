"""The password policy of NIST SP 800-63B.

Length only (counted in Unicode code points after NFKC normalization), no composition
rules, and two blocklists: the offline list of common and breached passwords shipped in
``data/``, and the user's own email address.
"""

import gzip
import unicodedata
from functools import cache
from importlib import resources

from aixiate_users.errors import WeakPassword

COMMON_PASSWORDS_FILE = "common-passwords.txt.gz"

#: A local part shorter than this ("bob") is too likely inside an unrelated password.
MIN_EMAIL_LOCAL_PART = 4


def normalize_password(password: str) -> str:
    """NFKC, as SP 800-63B asks before counting and hashing: a password typed on another
    keyboard or in another composition form is still the same password."""
    return unicodedata.normalize("NFKC", password)


@cache
def common_passwords() -> frozenset[str]:
    """The blocklist, read once per process (about 0.1 s, 20 MB); keys are NFKC, lower-case.

    Call it at startup to keep that first read out of a request.
    """
    data = resources.files("aixiate_users").joinpath("data", COMMON_PASSWORDS_FILE).read_bytes()
    return frozenset(gzip.decompress(data).decode("utf-8").splitlines())


def is_common(password: str) -> bool:
    return normalize_password(password).lower() in common_passwords()


def contains_email(password: str, email: str) -> bool:
    lowered = normalize_password(password).lower()
    address = normalize_password(email).strip().lower()
    if not address:
        return False
    if address in lowered:
        return True
    local_part = address.rpartition("@")[0]
    return len(local_part) >= MIN_EMAIL_LOCAL_PART and local_part in lowered


class PasswordPolicy:
    def __init__(self, *, min_length: int, max_length: int) -> None:
        self.min_length = min_length
        self.max_length = max_length

    def check(self, password: str, *, email: str | None = None) -> None:
        """Raises :class:`WeakPassword` whose ``reason`` is ``too_short``, ``too_long``,
        ``contains_email`` or ``common``."""
        length = len(normalize_password(password))
        if length < self.min_length:
            raise WeakPassword(
                f"The password must be at least {self.min_length} characters long.",
                extra={"reason": "too_short", "min_length": self.min_length},
            )
        if length > self.max_length:
            raise WeakPassword(
                f"The password must be at most {self.max_length} characters long.",
                extra={"reason": "too_long", "max_length": self.max_length},
            )
        if _has_surrogates(password):
            # Lone surrogates cannot be encoded as UTF-8; no keyboard produces them.
            raise WeakPassword(
                "The password contains characters that are not valid text.",
                extra={"reason": "invalid_characters"},
            )
        if email and contains_email(password, email):
            raise WeakPassword(
                "The password must not contain your email address.",
                extra={"reason": "contains_email"},
            )
        if is_common(password):
            raise WeakPassword(
                "The password is too common: it appears in lists of breached passwords.",
                extra={"reason": "common"},
            )


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
