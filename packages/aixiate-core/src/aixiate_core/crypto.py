"""Secrets at rest, and what is stored in place of tokens and identities.

Encryption is AES-256-GCM under keys derived from ``AIXIATE_SECRET_KEY``. Each use gets
its own key through HKDF with a purpose label, so a key derived for outbox messages can
never open a signing key, and rotating the secret key is the one switch that retires
them all. Tokens are stored as plain digests, identities (IPs, addresses) that key
counters as digests keyed by the same secret.
"""

import hashlib
import hmac
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE_BYTES = 12
_VERSION = b"\x01"


class DecryptionError(Exception):
    """The ciphertext was altered, or was sealed under another key or purpose."""


class SecretBox:
    def __init__(self, secret_key: str, purpose: str) -> None:
        self._purpose = purpose.encode()
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"aixiate/secret-box", info=self._purpose
        ).derive(secret_key.encode())
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, self._purpose)

    def open(self, sealed: bytes) -> bytes:
        if sealed[:1] != _VERSION:
            raise DecryptionError("unknown format")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, self._purpose)
        except InvalidTag as exc:
            raise DecryptionError("ciphertext rejected") from exc


def new_token(nbytes: int = 32) -> str:
    """A URL-safe random token; 32 bytes = 256 bits."""
    return secrets.token_urlsafe(nbytes)


def token_digest(token: str) -> str:
    """What is stored instead of a token: its SHA-256, hex. Tokens are random and long,
    so a fast hash is enough; there is nothing to brute-force."""
    return hashlib.sha256(token.encode()).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def keyed_digest(secret: str, value: str) -> str:
    """What keys hold instead of an IP or an address: an HMAC under the service's secret,
    so a dump of Redis cannot be matched against a list of addresses."""
    mac = hmac.new(secret.encode(), b"aixiate/identity\x00" + value.encode(), hashlib.sha256)
    return mac.hexdigest()[:32]
