"""Social login's building blocks: providers and their presets, talking to a provider
through authlib's OAuth 2.0 client, ID token verification, the allow-list of front-end
return URLs, and the short-lived records of a flow in the shared store.

A provider with an ``issuer`` is a generic OpenID Connect provider: its endpoints come
from discovery, and its ID token is verified here with joserfc against the provider's
JWKS (signature, ``iss``, ``aud``, ``exp``, ``iat``, ``nonce``), never trusted as sent.
``github`` is plain OAuth 2: who the user is comes from its API (the account id, and the
primary address only if GitHub says it is verified).
"""

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx2
import structlog
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from pydantic import BaseModel, ConfigDict, Field, SecretStr

log = structlog.get_logger()

ProviderKind = Literal["oidc", "github"]
#: Provider names are path segments and audit values.
PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
#: What ID tokens may be signed with: asymmetric only (an HS256 token would be signed
#: with our own client secret, which proves nothing about the provider).
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]
#: Clock skew tolerated on the ID token's exp and iat.
ID_TOKEN_LEEWAY_SECONDS = 60
#: How long discovery documents and key sets are kept, and the least time between two
#: fetches that a token with an unknown key may trigger.
METADATA_TTL_SECONDS = 3600.0
MIN_REFETCH_SECONDS = 60.0
HTTP_TIMEOUT_SECONDS = 10.0
MAX_REDIRECT_URL_LENGTH = 2048


class ProviderSettings(BaseModel):
    """One entry of ``AIXIATE_OAUTH_PROVIDERS``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(min_length=1, max_length=512)
    client_secret: SecretStr
    issuer: str | None = None
    scopes: tuple[str, ...] | None = None
    display_name: str | None = Field(default=None, max_length=80)
    # Plain OAuth 2 (the github preset): endpoint overrides, for GitHub Enterprise.
    authorize_url: str | None = None
    token_url: str | None = None
    api_url: str | None = None


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    kind: ProviderKind
    display_name: str
    client_id: str
    client_secret: SecretStr
    scopes: tuple[str, ...]
    issuer: str | None = None
    authorize_url: str | None = None
    token_url: str | None = None
    api_url: str | None = None


_OIDC_SCOPES = ("openid", "email", "profile")
_PRESETS: dict[str, dict[str, Any]] = {
    "google": {"issuer": "https://accounts.google.com", "display_name": "Google"},
    # The multi-tenant endpoint: the issuer names each token's tenant ({tenantid}).
    "microsoft": {
        "issuer": "https://login.microsoftonline.com/common/v2.0",
        "display_name": "Microsoft",
    },
    "github": {
        "kind": "github",
        "display_name": "GitHub",
        "authorize_url": "https://github.com/login/oauth/authorize",
        "token_url": "https://github.com/login/oauth/access_token",
        "api_url": "https://api.github.com",
        "scopes": ("read:user", "user:email"),
    },
}


def resolve_providers(configured: Mapping[str, ProviderSettings]) -> dict[str, Provider]:
    """The configured providers with their presets filled in; ValueError names what is
    wrong with one."""
    providers = {}
    for name, entry in configured.items():
        if not PROVIDER_NAME.fullmatch(name):
            raise ValueError(f"provider name {name!r}: use lower-case letters, digits, - and _")
        preset = _PRESETS.get(name, {})
        given = entry.model_dump(exclude_none=True, exclude={"client_id", "client_secret"})
        merged = {**preset, **given}
        kind: ProviderKind = merged.get("kind", "oidc")
        if kind == "oidc" and not merged.get("issuer"):
            raise ValueError(f"provider {name!r} needs an issuer (an OpenID Connect provider)")
        for key in ("issuer", "authorize_url", "token_url", "api_url"):
            value = merged.get(key)
            if value is not None and not str(value).startswith(("https://", "http://")):
                raise ValueError(f"provider {name!r}: {key} must be an http(s) URL")
        providers[name] = Provider(
            name=name,
            kind=kind,
            display_name=merged.get("display_name") or name.capitalize(),
            client_id=entry.client_id,
            client_secret=entry.client_secret,
            scopes=tuple(merged.get("scopes") or _OIDC_SCOPES),
            issuer=str(merged["issuer"]).rstrip("/") if merged.get("issuer") else None,
            authorize_url=merged.get("authorize_url"),
            token_url=merged.get("token_url"),
            api_url=str(merged["api_url"]).rstrip("/") if merged.get("api_url") else None,
        )
    return providers


# --- who the provider says the user is -----------------------------------------------


@dataclass(frozen=True, slots=True)
class ExternalIdentity:
    subject: str
    email: str | None
    email_verified: bool
    name: str | None


class ProviderError(Exception):
    """The provider refused, failed, or answered something we cannot trust; ``reason``
    is for the audit log (the user is only told ``provider_error``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Cached:
    value: dict[str, Any]
    fetched_at: float


@dataclass
class ProviderClients:
    """Talks to the providers. Keeps each provider's discovery document and key set in
    memory; a token signed with a key not in the set triggers one early fetch at most
    every ``MIN_REFETCH_SECONDS``, so forged key ids cannot make us hammer the provider."""

    callback_base: str
    timeout: float = HTTP_TIMEOUT_SECONDS
    _metadata: dict[str, _Cached] = field(default_factory=dict)
    _keys: dict[str, _Cached] = field(default_factory=dict)

    def redirect_uri(self, provider: Provider) -> str:
        return f"{self.callback_base}/{provider.name}/callback"

    def _client(self, provider: Provider) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=provider.client_id,
            client_secret=provider.client_secret.get_secret_value(),
            scope=" ".join(provider.scopes),
            redirect_uri=self.redirect_uri(provider),
            code_challenge_method="S256",
            timeout=self.timeout,
        )

    async def authorization_url(
        self, provider: Provider, *, state: str, verifier: str, nonce: str
    ) -> str:
        if provider.kind == "github":
            endpoint = str(provider.authorize_url)
            extra: dict[str, str] = {}
        else:
            endpoint = (await self._discovery(provider))["authorization_endpoint"]
            extra = {"nonce": nonce}
        async with self._client(provider) as client:
            url, _ = client.create_authorization_url(
                endpoint, state=state, code_verifier=verifier, **extra
            )
        return str(url)

    async def identity(
        self, provider: Provider, *, code: str, verifier: str, nonce: str
    ) -> ExternalIdentity:
        try:
            if provider.kind == "github":
                return await self._github_identity(provider, code=code, verifier=verifier)
            return await self._oidc_identity(provider, code=code, verifier=verifier, nonce=nonce)
        except ProviderError:
            raise
        except OAuthError as exc:
            raise ProviderError(f"token_endpoint:{exc.error}") from exc
        except httpx2.HTTPError as exc:
            raise ProviderError(f"unreachable:{type(exc).__name__}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # JSON that is not what the protocol says.
            raise ProviderError(f"unusable_answer:{type(exc).__name__}") from exc

    async def _oidc_identity(
        self, provider: Provider, *, code: str, verifier: str, nonce: str
    ) -> ExternalIdentity:
        metadata = await self._discovery(provider)
        async with self._client(provider) as client:
            token = await client.fetch_token(
                metadata["token_endpoint"],
                grant_type="authorization_code",
                code=code,
                code_verifier=verifier,
            )
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise ProviderError("no_id_token")
        claims = await self.verify_id_token(provider, id_token, nonce=nonce)
        email = claims.get("email")
        return ExternalIdentity(
            subject=str(claims["sub"]),
            email=email if isinstance(email, str) and email else None,
            email_verified=claims.get("email_verified") is True,
            name=claims.get("name") if isinstance(claims.get("name"), str) else None,
        )

    async def verify_id_token(
        self, provider: Provider, id_token: str, *, nonce: str
    ) -> dict[str, Any]:
        metadata = await self._discovery(provider)
        try:
            decoded = await self._decode(provider, metadata, id_token)
        except JoseError as exc:
            raise ProviderError(f"id_token:{type(exc).__name__}") from exc
        claims = dict(decoded)
        issuer = str(metadata["issuer"])
        if "{tenantid}" in issuer:
            # Microsoft's multi-tenant issuer: the token names its tenant.
            issuer = issuer.replace("{tenantid}", str(claims.get("tid", "")))
        registry = JWTClaimsRegistry(
            leeway=ID_TOKEN_LEEWAY_SECONDS,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": provider.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise ProviderError(f"id_token_claims:{type(exc).__name__}") from exc
        return claims

    async def _decode(
        self, provider: Provider, metadata: Mapping[str, Any], id_token: str
    ) -> Mapping[str, Any]:
        keys = await self._key_set(provider, str(metadata["jwks_uri"]), force=False)
        try:
            return jwt.decode(id_token, keys, algorithms=ID_TOKEN_ALGORITHMS).claims
        except JoseError:
            # Perhaps the provider rotated its keys: fetch them again, once in a while.
            fresh = await self._key_set(provider, str(metadata["jwks_uri"]), force=True)
            if fresh is keys:
                raise
            return jwt.decode(id_token, fresh, algorithms=ID_TOKEN_ALGORITHMS).claims

    async def _github_identity(
        self, provider: Provider, *, code: str, verifier: str
    ) -> ExternalIdentity:
        async with self._client(provider) as client:
            await client.fetch_token(
                str(provider.token_url),
                grant_type="authorization_code",
                code=code,
                code_verifier=verifier,
                headers={"Accept": "application/json"},
            )
            api = str(provider.api_url)
            headers = {"Accept": "application/vnd.github+json"}
            user = (await client.get(f"{api}/user", headers=headers)).raise_for_status().json()
            emails = await client.get(f"{api}/user/emails", headers=headers)
            listed = emails.raise_for_status().json()
        primary = next(
            (e for e in listed if isinstance(e, dict) and e.get("primary") is True), None
        )
        verified = primary is not None and primary.get("verified") is True
        return ExternalIdentity(
            subject=str(int(user["id"])),
            email=str(primary["email"]) if primary and primary.get("email") else None,
            email_verified=verified,
            name=user.get("name") if isinstance(user.get("name"), str) else None,
        )

    async def _discovery(self, provider: Provider) -> dict[str, Any]:
        cached = self._metadata.get(provider.name)
        if cached is not None and time.monotonic() - cached.fetched_at < METADATA_TTL_SECONDS:
            return cached.value
        url = f"{provider.issuer}/.well-known/openid-configuration"
        try:
            async with httpx2.AsyncClient(timeout=self.timeout) as http:
                document = (await http.get(url)).raise_for_status().json()
        except Exception as exc:
            if cached is not None:
                return cached.value  # keep working on the last good copy
            raise ProviderError(f"discovery:{type(exc).__name__}") from exc
        required = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
        if not isinstance(document, dict) or any(
            not isinstance(document.get(k), str) for k in required
        ):
            raise ProviderError("discovery:incomplete")
        issuer = document["issuer"]
        if "{tenantid}" not in issuer and issuer.rstrip("/") != provider.issuer:
            # OpenID Connect Discovery 4.3: the document must be the issuer's own.
            raise ProviderError("discovery:issuer_mismatch")
        self._metadata[provider.name] = _Cached(document, time.monotonic())
        return document

    async def _key_set(self, provider: Provider, jwks_uri: str, *, force: bool) -> KeySet:
        cached = self._keys.get(provider.name)
        age = time.monotonic() - cached.fetched_at if cached else float("inf")
        if cached is not None and (
            (not force and age < METADATA_TTL_SECONDS) or (force and age < MIN_REFETCH_SECONDS)
        ):
            return cached.value["keys"]  # type: ignore[no-any-return]
        try:
            async with httpx2.AsyncClient(timeout=self.timeout) as http:
                raw = (await http.get(jwks_uri)).raise_for_status().json()
            keys = KeySet.import_key_set(raw)
        except Exception as exc:
            if cached is not None:
                return cached.value["keys"]  # type: ignore[no-any-return]
            raise ProviderError(f"jwks:{type(exc).__name__}") from exc
        self._keys[provider.name] = _Cached({"keys": keys}, time.monotonic())
        return keys


# --- where a flow may return to -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Allowed:
    scheme: str
    host: str
    port: int
    path: str


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


class RedirectAllowList:
    """Front-end URLs a flow may send the user back to. A URL is allowed when its scheme,
    host and port equal an entry's and its path is the entry's path or below it (at a
    ``/`` boundary): ``https://app.example.com/auth`` allows ``/auth`` and ``/auth/done``,
    never ``/authx``, ``https://app.example.com.evil.test`` or ``https://user@...``."""

    def __init__(self, entries: Sequence[str]) -> None:
        self._entries = [self._parse_entry(entry) for entry in entries]

    @staticmethod
    def _parse_entry(entry: str) -> _Allowed:
        parts = urlsplit(entry)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{entry!r} is not an http(s) URL")
        path = parts.path.rstrip("/")
        return _Allowed(
            parts.scheme, parts.hostname, parts.port or _default_port(parts.scheme), path
        )

    def permits(self, url: str) -> bool:
        if len(url) > MAX_REDIRECT_URL_LENGTH or any(c in url for c in "\\\x00\r\n\t "):
            return False
        try:
            parts = urlsplit(url)
            port = parts.port or _default_port(parts.scheme)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
            return False
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            return False
        segments = parts.path.split("/")
        if any(s in (".", "..") or "%" in s for s in segments):
            return False  # no way to climb out of an allowed path
        for allowed in self._entries:
            if (parts.scheme, parts.hostname, port) != (allowed.scheme, allowed.host, allowed.port):
                continue
            if parts.path == allowed.path or parts.path.startswith(allowed.path + "/"):
                return True
            if not allowed.path and parts.path == "":
                return True
        return False


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query string."""
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
