"""The second factor's primitives: TOTP codes, recovery codes, and the step-up token.

TOTP is RFC 6238 as every authenticator app reads it (SHA1, 6 digits, 30-second steps),
computed by ``pyotp``; one step of clock drift is accepted either way. A code is judged
against each step in constant time, and the step it matched is returned so the caller
can refuse it the second time (see ``MfaRepository.accept_step``).

The step-up token of a login with MFA (:class:`MfaChallenges`) lives in the shared store
under its digest: opaque, single-use, five minutes, five codes, bound to the password
check that issued it.
"""

import hmac
import io
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import pyotp
import segno
from aixiate_core.crypto import token_digest
from aixiate_core.store import KeyValueStore

from aixiate_auth.handles import Handles

TOTP_DIGITS = 6
TOTP_PERIOD = 30
#: Steps of clock drift accepted on either side of the current one.
TOTP_DRIFT_STEPS = 1
#: 32 base32 characters: the 160-bit secret RFC 4226 recommends.
SECRET_LENGTH = 32

RECOVERY_CODE_COUNT = 10
# No 0/o, 1/l/i: codes are read off paper. 31 symbols x 16 = 79 bits per code.
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_LENGTH = 16
_RECOVERY_GROUP = 4
_SEPARATORS = re.compile(r"[\s-]+")
_TOTP_CODE = re.compile(rf"\d{{{TOTP_DIGITS}}}")

#: What the methods are called in ``mfa_methods`` and ``GET /auth/mfa``.
TOTP_METHOD = "totp"
RECOVERY_METHOD = "recovery_code"

#: RFC 8176 ``amr`` values: a password; a one-time password; more than one factor.
AMR_PASSWORD = "pwd"  # noqa: S105 - an RFC 8176 method name
AMR_OTP = "otp"
AMR_MFA = "mfa"


def new_secret() -> str:
    return pyotp.random_base32(SECRET_LENGTH)


def otpauth_uri(secret: str, *, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD).provisioning_uri(
        name=account, issuer_name=issuer
    )


def qr_svg(uri: str) -> str:
    """A standalone SVG document of the QR code (usable inline or as an ``<img>``)."""
    buffer = io.BytesIO()
    segno.make(uri, error="m", micro=False).save(
        buffer, kind="svg", scale=4, border=4, xmldecl=False, svgns=True, title="QR code"
    )
    return buffer.getvalue().decode()


def looks_like_totp(code: str) -> bool:
    return _TOTP_CODE.fullmatch(_SEPARATORS.sub("", code)) is not None


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The step within the drift window whose code is ``code``, or None.

    Every step in the window is compared, in constant time, whatever matched first:
    how long this takes says nothing about which step (if any) matched."""
    code = _SEPARATORS.sub("", code)
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD)
    current = int(now) // TOTP_PERIOD
    matched: int | None = None
    for step in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.at(step * TOTP_PERIOD).encode(), code.encode()):
            matched = step
    return matched


def new_recovery_codes() -> list[str]:
    """Ten codes, shown once, grouped for reading: ``abcd-efgh-jkmn-pqrs``."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        groups = [raw[i : i + _RECOVERY_GROUP] for i in range(0, len(raw), _RECOVERY_GROUP)]
        codes.append("-".join(groups))
    return codes


def recovery_code_digest(code: str) -> str:
    """What is stored: the SHA-256 of the code without separators, in lower case, so a
    code typed in capitals or without dashes still matches."""
    return token_digest(_SEPARATORS.sub("", code).lower())


def find_digest(candidates: Sequence[str], digest: str) -> int | None:
    """The index of ``digest`` among ``candidates``, comparing with every one of them in
    constant time (no early exit)."""
    found: int | None = None
    for index, candidate in enumerate(candidates):
        if hmac.compare_digest(candidate.encode(), digest.encode()):
            found = index
    return found


# --- the step-up token of a login -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """A pending second step: whose, bound to what, proven how far."""

    key: str
    raw: str
    user_id: UUID
    binding: str
    amr: tuple[str, ...]


class MfaChallenges:
    """Step-up tokens in the shared store, so any replica can finish a login that
    another began. ``attempt`` reserves one of the ``max_attempts`` codes before the code
    is judged, so a concurrent burst gets no more guesses than a sequence would."""

    def __init__(
        self, store: KeyValueStore, *, ttl_seconds: float = 300.0, max_attempts: int = 5
    ) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.max_attempts = max_attempts
        self.handles = Handles(store, "auth:mfa:challenge", ttl_seconds=ttl_seconds)

    async def issue(self, user_id: UUID, *, binding: str, amr: Sequence[str]) -> str:
        return await self.handles.put({"u": str(user_id), "b": binding, "amr": list(amr)})

    async def get(self, raw: str) -> Challenge | None:
        payload = await self.handles.peek(raw)
        if payload is None:
            return None
        return Challenge(
            key=self.handles.key(raw),
            raw=raw,
            user_id=UUID(payload["u"]),
            binding=payload["b"],
            amr=tuple(payload["amr"]),
        )

    async def attempt(self, challenge: Challenge) -> bool:
        """Reserves one attempt; False (and the token is dead) once all are spent."""
        used = await self.store.incr(f"{challenge.key}:attempts", ttl=self.ttl_seconds)
        if used > self.max_attempts:
            await self.discard(challenge)
            return False
        return True

    async def attempts_left(self, challenge: Challenge) -> int:
        raw = await self.store.get(f"{challenge.key}:attempts")
        return max(0, self.max_attempts - int(raw or 0))

    async def consume(self, challenge: Challenge) -> bool:
        """Claims the token for the one request that finishes the login: of concurrent
        claims, exactly one gets True."""
        return await self.handles.claim(challenge.raw)

    async def discard(self, challenge: Challenge) -> None:
        await self.handles.claim(challenge.raw)
