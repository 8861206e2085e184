"""Fake identity providers for the social login tests: real HTTP servers on 127.0.0.1.

:class:`FakeOIDCProvider` is an OpenID Connect provider (authorization code flow with
PKCE, RS256 ID tokens, a JWKS, userinfo) in Google's and Microsoft's mould;
:class:`FakeGitHub` is GitHub's plain OAuth 2 (``/login/oauth/...``) and its REST API's
``/user`` and ``/user/emails``. They are servers rather than mocked transports so that the
service's real HTTP client (authlib over httpx2), its discovery, JWKS fetching and error
handling all run as in production.

A test points the service at them through its settings: the OIDC provider's
:attr:`~FakeOIDCProvider.issuer` as the issuer or discovery base (its metadata is at
``{issuer}/.well-known/openid-configuration``) with :attr:`~FakeOIDCProvider.client_id`
and :attr:`~FakeOIDCProvider.client_secret`; for GitHub, the
:attr:`~FakeGitHub.authorize_url`, :attr:`~FakeGitHub.token_url` and
:attr:`~FakeGitHub.api_url` overrides in place of github.com. The "user" approves at
once: ``/authorize`` answers with the redirect to the service's callback, which the test
follows itself. Who signs in is ``next_user``; the ``*_next`` knobs make the next answer
misbehave (a denial, a tampered or foreign-signed ID token, a failing token endpoint),
for the tests of what the service must refuse. Every request is kept in ``calls``.

Use them as context managers so the server is always shut down::

    with FakeOIDCProvider() as provider:
        provider.next_user = ProviderUser(subject="42", email="ada@example.com", name="Ada")
"""

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

__all__ = [
    "FakeGitHub",
    "FakeOIDCProvider",
    "GitHubUser",
    "ProviderCall",
    "ProviderUser",
    "approve",
    "pkce_challenge",
]

#: RFC 7636's code_verifier: 43 to 128 unreserved characters.
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_ID_TOKEN_ALGORITHM = "RS256"  # noqa: S105 - an algorithm name
_ID_TOKEN_TTL_SECONDS = 300
_ACCESS_TOKEN_TTL_SECONDS = 3600


def pkce_challenge(verifier: str) -> str:
    """The S256 code_challenge of ``verifier``: unpadded base64url of its SHA-256."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` added to the query it may already have (RFC 6749 3.1.2)."""
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit(parts._replace(query=query))


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """One request a fake received. ``params`` is the query of a GET or the form of a
    POST; ``headers`` are keyed in lower case; ``status`` is the answer's."""

    path: str
    method: str
    params: dict[str, str]
    headers: dict[str, str]
    status: int


@dataclass(frozen=True, slots=True)
class _Request:
    path: str
    method: str
    params: dict[str, str]
    #: Parameters given more than once, which OAuth 2 forbids (RFC 6749 3.1).
    repeated: frozenset[str]
    headers: dict[str, str]

    def bearer(self) -> str | None:
        """The token of ``Authorization: Bearer`` (or GitHub's ``token``) scheme."""
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in {"bearer", "token"}:
            return None
        return token.strip() or None

    def basic(self) -> tuple[str, str] | None:
        """HTTP Basic client credentials, form-decoded as RFC 6749 2.3.1 has them encoded."""
        scheme, _, encoded = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except ValueError:
            return None
        client_id, colon, secret = decoded.partition(":")
        return (unquote_plus(client_id), unquote_plus(secret)) if colon else None


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, **headers: str) -> "_Response":
        return cls(status, json.dumps(payload).encode(), headers=headers)


type _Route = Callable[[_Request], _Response]


class _FakeServer(ABC):
    """The threaded loopback server and call log that both fakes share (as FakeResend)."""

    _thread_name = "fake-provider"

    def __init__(self) -> None:
        self._calls: list[ProviderCall] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def calls(self) -> list[ProviderCall]:
        """Every request so far, oldest first (a copy: the server keeps appending)."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, path: str) -> list[ProviderCall]:
        return [call for call in self.calls if call.path == path]

    def start(self) -> None:
        # A short poll interval: shutdown() waits for the loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=self._thread_name,
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @abstractmethod
    def _routes(self) -> dict[str, dict[str, _Route]]:
        """Path, then method, to the handler."""

    def _dispatch(self, request: _Request) -> _Response:
        methods = self._routes().get(request.path)
        if methods is None:
            response = _Response.json(404, {"message": "Not Found"})
        elif (route := methods.get(request.method)) is None:
            response = _Response.json(405, {"message": "Method Not Allowed"})
            response.headers["Allow"] = ", ".join(sorted(methods))
        else:
            response = route(request)
        with self._lock:
            self._calls.append(
                ProviderCall(
                    request.path,
                    request.method,
                    request.params,
                    request.headers,
                    response.status,
                )
            )
        return response

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._handle(self._query())

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
                form = "form-urlencoded" in self.headers.get("Content-Type", "")
                self._handle(raw if form else "")

            def _query(self) -> str:
                return urlsplit(self.path).query

            def _handle(self, encoded: str) -> None:
                pairs = parse_qsl(encoded, keep_blank_values=True)
                params: dict[str, str] = {}
                repeated: set[str] = set()
                for name, value in pairs:
                    if name in params:
                        repeated.add(name)
                    params.setdefault(name, value)
                request = _Request(
                    path=urlsplit(self.path).path,
                    method=self.command,
                    params=params,
                    repeated=frozenset(repeated),
                    headers={name.lower(): value for name, value in self.headers.items()},
                )
                response = fake._dispatch(request)
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", response.content_type)
                    self.send_header("Content-Length", str(len(response.body)))
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(response.body)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client went away; nothing to tell it

            def log_message(self, format: str, *args: Any) -> None:
                return None  # keep test output clean; the fake records calls instead

        return Handler


def _new_key(kid: str | None = None) -> RSAKey:
    kid = kid or f"fake-{secrets.token_hex(4)}"
    return RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)


def _pkce_ok(verifier: str | None, challenge: str) -> bool:
    if verifier is None or not _VERIFIER.fullmatch(verifier):
        return False
    return secrets.compare_digest(pkce_challenge(verifier), challenge)


# ---------------------------------------------------------------------------------------
# OpenID Connect


@dataclass(frozen=True, slots=True)
class ProviderUser:
    """The account that signs in at :class:`FakeOIDCProvider`. ``email`` and ``name``
    may be None: providers leave out claims they do not have."""

    subject: str
    email: str | None
    email_verified: bool = True
    name: str | None = None

    @classmethod
    def random(cls) -> "ProviderUser":
        """A user no test has seen, with a verified address."""
        tag = secrets.token_hex(6)
        return cls(
            subject=str(secrets.randbelow(10**20)).zfill(21),  # Google's are digit strings
            email=f"oidc-{tag}@example.com",
            email_verified=True,
            name=f"OIDC User {tag}",
        )


@dataclass(frozen=True, slots=True)
class _Grant:
    """What /authorize remembers of one code, for /token to check."""

    user: ProviderUser
    client_id: str
    redirect_uri: str
    nonce: str | None
    code_challenge: str
    scope: str


class FakeOIDCProvider(_FakeServer):
    """An OpenID Connect provider: discovery, /authorize (the user approves at once,
    PKCE S256 required), /token (client secret, single-use codes, PKCE checked), RS256 ID
    tokens with a ``kid``, /jwks and /userinfo.

    ID token and userinfo claims follow the scopes, as the spec has them: ``email`` and
    ``email_verified`` with ``email``, ``name`` with ``profile``; no ID token at all
    without ``openid``. A code is spent by its first presentation at /token, even if the
    exchange then fails (PKCE, redirect_uri); a second one also revokes the access token
    the first issued (RFC 6749 4.1.2).

    With ``tenant``, it plays Microsoft's multi-tenant endpoint, whose discovery issuer is
    a template: configure :attr:`issuer` (``{url}/common/v2.0``); the discovery document
    says ``{url}/{tenantid}/v2.0`` and ID tokens carry ``tid`` and
    :attr:`token_issuer` (``{url}/<tenant>/v2.0``).
    """

    _thread_name = "fake-oidc-provider"

    def __init__(
        self,
        *,
        client_id: str = "aixiate-test",
        client_secret: str = "s3cret-of-the-client",  # noqa: S107 - a test client's
        tenant: str | None = None,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.tenant = tenant
        self._keys = [_new_key()]  # the newest signs
        self._next_user = ProviderUser.random()
        self._grants: dict[str, _Grant] = {}
        self._spent: dict[str, str | None] = {}  # spent code -> the access token it gave
        self._access_tokens: dict[str, tuple[ProviderUser, str, float]] = {}
        self._deny_next = False
        self._tamper: dict[str, Any] = {}
        self._omit: set[str] = set()
        self._foreign_next = False
        self._token_failure: int | None = None

    # -- configuration ------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        """What the service is configured with: the base URL, or with a ``tenant``, the
        common endpoint ``{url}/common/v2.0`` (Microsoft's multi-tenant issuer)."""
        return f"{self.url}/common/v2.0" if self.tenant is not None else self.url

    @property
    def token_issuer(self) -> str:
        """The ``iss`` of the ID tokens: :attr:`issuer`, or the tenant's own."""
        return f"{self.url}/{self.tenant}/v2.0" if self.tenant is not None else self.url

    @property
    def kid(self) -> str:
        """The ``kid`` of the key that signs now, published at /jwks."""
        with self._lock:
            return self._keys[-1].kid or ""

    def rotate_key(self, *, keep_old: bool = True) -> str:
        """A new signing key (and kid) from now on; the old ones stay published unless
        ``keep_old`` is false. Returns the new kid."""
        key = _new_key()
        with self._lock:
            self._keys = [*self._keys, key] if keep_old else [key]
        return key.kid or ""

    @property
    def next_user(self) -> ProviderUser:
        """Who signs in at every /authorize from now on (a random user to begin with)."""
        with self._lock:
            return self._next_user

    @next_user.setter
    def next_user(self, user: ProviderUser) -> None:
        with self._lock:
            self._next_user = user

    def jwks(self) -> dict[str, Any]:
        """The public key set, as /jwks serves it."""
        with self._lock:
            keys = list(self._keys)
        public = [key.as_dict(private=False) for key in keys]
        return {"keys": [{**key, "alg": _ID_TOKEN_ALGORITHM, "use": "sig"} for key in public]}

    def metadata(self) -> dict[str, Any]:
        """The discovery document, as /.well-known/openid-configuration serves it."""
        base = self.url
        return {
            # Microsoft's common endpoint names a template, not an issuer.
            "issuer": base if self.tenant is None else f"{base}/{{tenantid}}/v2.0",
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "userinfo_endpoint": f"{base}/userinfo",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [_ID_TOKEN_ALGORITHM],
            "scopes_supported": ["openid", "email", "profile"],
            "claims_supported": [
                *("iss", "sub", "aud", "exp", "iat", "nonce"),
                *("email", "email_verified", "name", "at_hash"),
            ],
            "grant_types_supported": ["authorization_code"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
            ],
            "code_challenge_methods_supported": ["S256"],
        }

    # -- one-shot knobs -----------------------------------------------------------------

    def deny_next(self) -> None:
        """The next /authorize redirects with ``error=access_denied``: the user said no."""
        with self._lock:
            self._deny_next = True

    def tamper_next(self, **claims: Any) -> None:
        """The next ID token carries these claims, added or in place of the true ones."""
        with self._lock:
            self._tamper.update(claims)

    def omit_next(self, *claims: str) -> None:
        """The next ID token lacks these claims."""
        with self._lock:
            self._omit.update(claims)

    def sign_next_with_foreign_key(self) -> None:
        """The next ID token is signed by a key absent from /jwks that has the same kid:
        only the signature check can tell."""
        with self._lock:
            self._foreign_next = True

    def fail_token_endpoint_next(self, status: int = 500) -> None:
        """The next /token answers ``status`` with ``server_error``; the code stays unused."""
        with self._lock:
            self._token_failure = status

    # -- endpoints ----------------------------------------------------------------------

    def _routes(self) -> dict[str, dict[str, _Route]]:
        return {
            f"{urlsplit(self.issuer).path}/.well-known/openid-configuration": {
                "GET": self._discovery
            },
            "/authorize": {"GET": self._authorize},
            "/token": {"POST": self._token},
            "/jwks": {"GET": self._jwks},
            "/userinfo": {"GET": self._userinfo, "POST": self._userinfo},
        }

    def _discovery(self, _: _Request) -> _Response:
        return _Response.json(200, self.metadata())

    def _jwks(self, _: _Request) -> _Response:
        return _Response.json(200, self.jwks())

    def _authorize(self, request: _Request) -> _Response:
        params = request.params
        # Errors before the redirect_uri is trusted are shown to the user, not redirected.
        if request.repeated:
            return _bad_request("invalid_request", f"repeated: {sorted(request.repeated)}")
        if params.get("client_id") != self.client_id:
            return _bad_request("invalid_client", "unknown client_id")
        redirect_uri = params.get("redirect_uri", "")
        if not redirect_uri.startswith(("http://", "https://")):
            return _bad_request("invalid_request", "redirect_uri must be an absolute URL")
        if params.get("response_type") != "code":
            return _bad_request("unsupported_response_type", "only response_type=code")
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return _bad_request("invalid_request", "PKCE with code_challenge_method=S256")
        state = {"state": params["state"]} if "state" in params else {}
        with self._lock:
            denied, self._deny_next = self._deny_next, False
            user = self._next_user
            if not denied:
                code = secrets.token_urlsafe(24)
                self._grants[code] = _Grant(
                    user=user,
                    client_id=self.client_id,
                    redirect_uri=redirect_uri,
                    nonce=params.get("nonce"),
                    code_challenge=params["code_challenge"],
                    scope=params.get("scope", ""),
                )
        if denied:
            answer = {
                "error": "access_denied",
                "error_description": "The user denied the request",
            }
            return _redirect(_with_query(redirect_uri, answer | state))
        return _redirect(_with_query(redirect_uri, {"code": code} | state))

    def _authenticate_client(self, request: _Request) -> tuple[bool, bool]:
        """Whether the client proved itself, and whether it tried HTTP Basic."""
        basic = request.basic()
        if basic is not None:
            client_id, secret = basic
            if request.params.get("client_id", client_id) != client_id:
                return False, True
        else:
            client_id = request.params.get("client_id", "")
            secret = request.params.get("client_secret", "")
        ok = client_id == self.client_id and secrets.compare_digest(
            secret.encode(), self.client_secret.encode()
        )
        return ok, basic is not None

    def _token(self, request: _Request) -> _Response:
        params = request.params
        with self._lock:
            failure, self._token_failure = self._token_failure, None
        if failure is not None:
            return _token_error("server_error", "the fake was told to fail", status=failure)
        if request.repeated:
            return _token_error("invalid_request", f"repeated: {sorted(request.repeated)}")
        authenticated, basic = self._authenticate_client(request)
        if not authenticated:
            challenge = {"WWW-Authenticate": 'Basic realm="fake-oidc"'} if basic else {}
            return _token_error("invalid_client", "client authentication failed", 401, challenge)
        if params.get("grant_type") != "authorization_code":
            return _token_error("unsupported_grant_type", "only authorization_code")
        code = params.get("code")
        if not code:
            return _token_error("invalid_request", "code is missing")
        with self._lock:
            grant = self._grants.pop(code, None)
            if grant is None:
                if code in self._spent:  # a replay: revoke what the code gave
                    self._access_tokens.pop(self._spent[code] or "", None)
                return _token_error("invalid_grant", "unknown, expired or used code")
            self._spent[code] = None
        if params.get("redirect_uri") != grant.redirect_uri:
            return _token_error("invalid_grant", "redirect_uri does not match")
        if not _pkce_ok(params.get("code_verifier"), grant.code_challenge):
            return _token_error("invalid_grant", "PKCE verification failed")
        access_token = secrets.token_urlsafe(32)
        now = int(time.time())
        answer: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": _ACCESS_TOKEN_TTL_SECONDS,
            "scope": grant.scope,
        }
        if "openid" in grant.scope.split():
            answer["id_token"] = self._id_token(grant, access_token, now)
        with self._lock:
            self._spent[code] = access_token
            expiry = now + _ACCESS_TOKEN_TTL_SECONDS
            self._access_tokens[access_token] = (grant.user, grant.scope, expiry)
        return _Response.json(200, answer, **{"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _id_token(self, grant: _Grant, access_token: str, now: int) -> str:
        digest = hashlib.sha256(access_token.encode("ascii")).digest()
        claims: dict[str, Any] = {
            "iss": self.token_issuer,
            "sub": grant.user.subject,
            "aud": grant.client_id,
            "exp": now + _ID_TOKEN_TTL_SECONDS,
            "iat": now,
            # The left half of the access token's hash (OIDC Core 3.1.3.6).
            "at_hash": base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode(),
        }
        if self.tenant is not None:
            claims["tid"] = self.tenant
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        claims |= _profile_claims(grant.user, grant.scope)
        with self._lock:
            tamper, self._tamper = self._tamper, {}
            omit, self._omit = self._omit, set()
            foreign, self._foreign_next = self._foreign_next, False
            key = self._keys[-1]
        kid = key.kid or ""
        if foreign:
            key = _new_key(kid)
        claims |= tamper
        for name in omit:
            claims.pop(name, None)
        header = {"alg": _ID_TOKEN_ALGORITHM, "kid": kid}
        return jwt.encode(header, claims, key, algorithms=[_ID_TOKEN_ALGORITHM])

    def _userinfo(self, request: _Request) -> _Response:
        token = request.bearer()
        with self._lock:
            found = self._access_tokens.get(token or "")
        if found is None or found[2] < time.time():
            challenge = 'Bearer error="invalid_token"' if token else "Bearer"
            return _Response.json(
                401, {"error": "invalid_token"}, **{"WWW-Authenticate": challenge}
            )
        user, scope, _ = found
        return _Response.json(200, {"sub": user.subject} | _profile_claims(user, scope))


def _profile_claims(user: ProviderUser, scope: str) -> dict[str, Any]:
    scopes = scope.split()
    claims: dict[str, Any] = {}
    if "email" in scopes and user.email is not None:
        claims["email"] = user.email
        claims["email_verified"] = user.email_verified
    if "profile" in scopes and user.name is not None:
        claims["name"] = user.name
    return claims


def _redirect(location: str) -> _Response:
    return _Response(302, content_type="text/plain", headers={"Location": location})


def _bad_request(error: str, description: str) -> _Response:
    return _Response.json(400, {"error": error, "error_description": description})


def _token_error(
    error: str,
    description: str,
    status: int = 400,
    headers: Mapping[str, str] | None = None,
) -> _Response:
    response = _Response.json(status, {"error": error, "error_description": description})
    response.headers |= {"Cache-Control": "no-store", **(headers or {})}
    return response


# ---------------------------------------------------------------------------------------
# GitHub


@dataclass(frozen=True, slots=True)
class GitHubUser:
    """The account that signs in at :class:`FakeGitHub`. ``emails`` are
    ``(address, primary, verified)``; ``public_email`` is what ``/user`` shows as
    ``email`` (None, GitHub's default, hides it: the service must ask /user/emails)."""

    id: int
    login: str
    name: str | None
    emails: Sequence[tuple[str, bool, bool]]
    public_email: str | None = None

    @classmethod
    def random(cls) -> "GitHubUser":
        """A user no test has seen, with one primary, verified, private address."""
        tag = secrets.token_hex(4)
        return cls(
            id=10_000_000 + secrets.randbelow(90_000_000),
            login=f"octo-{tag}",
            name=f"Octo {tag}",
            emails=[(f"octo-{tag}@example.com", True, True)],
        )


@dataclass(frozen=True, slots=True)
class _GitHubGrant:
    user: GitHubUser
    redirect_uri: str
    code_challenge: str
    scope: str


_GITHUB_DOCS = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors"


class FakeGitHub(_FakeServer):
    """GitHub's OAuth 2 for OAuth apps and the two API calls a login needs.

    As GitHub: the token endpoint answers errors with HTTP 200 and an ``error`` field,
    and with a form-encoded body unless asked for JSON; the granted scope is
    comma-separated; /user/emails needs the ``user:email`` (or ``user``) scope, else 404;
    the API wants a User-Agent (else 403) and takes ``Bearer`` or ``token`` credentials.
    PKCE (S256) is required here, though GitHub leaves it optional, so that a service
    forgetting it fails. A code is spent by its first presentation at the token endpoint.
    """

    _thread_name = "fake-github"

    def __init__(
        self,
        *,
        client_id: str = "aixiate-github-test",
        client_secret: str = "s3cret-of-the-github-app",  # noqa: S107 - a test client's
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self._next_user = GitHubUser.random()
        self._grants: dict[str, _GitHubGrant] = {}
        self._access_tokens: dict[str, tuple[GitHubUser, str]] = {}
        self._deny_next = False
        self._token_failure: int | None = None

    @property
    def authorize_url(self) -> str:
        return f"{self.url}/login/oauth/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.url}/login/oauth/access_token"

    @property
    def api_url(self) -> str:
        """The REST API's base, in place of https://api.github.com (no trailing slash)."""
        return self.url

    @property
    def next_user(self) -> GitHubUser:
        """Who signs in at every authorization from now on (a random user to begin with)."""
        with self._lock:
            return self._next_user

    @next_user.setter
    def next_user(self, user: GitHubUser) -> None:
        with self._lock:
            self._next_user = user

    def deny_next(self) -> None:
        """The next authorization redirects with ``error=access_denied``."""
        with self._lock:
            self._deny_next = True

    def fail_token_endpoint_next(self, status: int = 500) -> None:
        """The next token request answers ``status``; the code stays unused."""
        with self._lock:
            self._token_failure = status

    def _routes(self) -> dict[str, dict[str, _Route]]:
        return {
            "/login/oauth/authorize": {"GET": self._authorize},
            "/login/oauth/access_token": {"POST": self._access_token},
            "/user": {"GET": self._user},
            "/user/emails": {"GET": self._emails},
        }

    def _authorize(self, request: _Request) -> _Response:
        params = request.params
        if params.get("client_id") != self.client_id:
            return _Response.json(404, {"message": "Not Found"})  # GitHub's page for it
        redirect_uri = params.get("redirect_uri", "")
        if not redirect_uri.startswith(("http://", "https://")):
            return _bad_request("redirect_uri_mismatch", "redirect_uri must be an absolute URL")
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return _bad_request("invalid_request", "PKCE with code_challenge_method=S256")
        state = {"state": params["state"]} if "state" in params else {}
        with self._lock:
            denied, self._deny_next = self._deny_next, False
            if not denied:
                code = secrets.token_hex(10)  # GitHub's codes are 20 hex digits
                self._grants[code] = _GitHubGrant(
                    user=self._next_user,
                    redirect_uri=redirect_uri,
                    code_challenge=params["code_challenge"],
                    scope=params.get("scope", ""),
                )
        if denied:
            answer = {
                "error": "access_denied",
                "error_description": "The user has denied your application access.",
                "error_uri": f"{_GITHUB_DOCS}/#access-denied",
            }
            return _redirect(_with_query(redirect_uri, answer | state))
        return _redirect(_with_query(redirect_uri, {"code": code} | state))

    def _access_token(self, request: _Request) -> _Response:
        params = request.params
        wants_json = "application/json" in request.headers.get("accept", "")
        with self._lock:
            failure, self._token_failure = self._token_failure, None
        if failure is not None:
            return _Response.json(failure, {"message": "the fake was told to fail"})
        basic = request.basic()
        client_id, secret = basic or (
            params.get("client_id", ""),
            params.get("client_secret", ""),
        )
        if client_id != self.client_id or not secrets.compare_digest(
            secret.encode(), self.client_secret.encode()
        ):
            return _github_error(
                "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
                "incorrect-client-credentials",
                wants_json,
            )
        with self._lock:
            grant = self._grants.pop(params.get("code", ""), None)
        bad_code = (
            "bad_verification_code",
            "The code passed is incorrect or expired.",
            "bad-verification-code",
            wants_json,
        )
        if grant is None:
            return _github_error(*bad_code)
        if params.get("redirect_uri", grant.redirect_uri) != grant.redirect_uri:
            return _github_error(
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
                "redirect-uri-mismatch2",
                wants_json,
            )
        if not _pkce_ok(params.get("code_verifier"), grant.code_challenge):
            return _github_error(*bad_code)
        access_token = "gho_" + secrets.token_hex(18)
        scope = ",".join(grant.scope.replace(",", " ").split())
        with self._lock:
            self._access_tokens[access_token] = (grant.user, scope)
        return _github_answer(
            {"access_token": access_token, "token_type": "bearer", "scope": scope}, wants_json
        )

    def _api_user(self, request: _Request) -> tuple[GitHubUser, str] | _Response:
        if not request.headers.get("user-agent"):
            return _Response.json(403, {"message": "Request forbidden by administrative rules."})
        with self._lock:
            found = self._access_tokens.get(request.bearer() or "")
        if found is None:
            return _Response.json(
                401,
                {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401",
                },
            )
        return found

    def _user(self, request: _Request) -> _Response:
        found = self._api_user(request)
        if isinstance(found, _Response):
            return found
        user, scope = found
        body = {
            "login": user.login,
            "id": user.id,
            "node_id": f"U_fake{user.id}",
            "avatar_url": f"https://avatars.example.com/u/{user.id}?v=4",
            "html_url": f"https://github.com/{user.login}",
            "type": "User",
            "site_admin": False,
            "name": user.name,
            "email": user.public_email,
        }
        return _Response.json(200, body, **{"X-OAuth-Scopes": scope.replace(",", ", ")})

    def _emails(self, request: _Request) -> _Response:
        found = self._api_user(request)
        if isinstance(found, _Response):
            return found
        user, scope = found
        if not {"user", "user:email"} & set(scope.split(",")):
            return _Response.json(
                404,
                {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"},
            )
        body = [
            {
                "email": email,
                "primary": primary,
                "verified": verified,
                "visibility": (
                    "public" if email == user.public_email else "private" if primary else None
                ),
            }
            for email, primary, verified in user.emails
        ]
        return _Response.json(200, body, **{"X-OAuth-Scopes": scope.replace(",", ", ")})


def _github_answer(payload: dict[str, str], wants_json: bool) -> _Response:
    if wants_json:
        return _Response.json(200, payload)
    return _Response(200, urlencode(payload).encode(), "application/x-www-form-urlencoded")


def _github_error(error: str, description: str, anchor: str, wants_json: bool) -> _Response:
    """GitHub's token errors: HTTP 200 with an ``error`` field."""
    payload = {
        "error": error,
        "error_description": description,
        "error_uri": f"{_GITHUB_DOCS}/#{anchor}",
    }
    return _github_answer(payload, wants_json)


async def approve(authorize_url: str) -> str:
    """The browser's visit to a fake provider's authorization URL: the user approves,
    and the provider's redirect back (the service's callback URL, with ``code`` and
    ``state``) is returned for the test to follow."""
    async with httpx.AsyncClient() as browser:
        response = await browser.get(authorize_url)
    if response.status_code != 302:
        raise AssertionError(f"the provider answered {response.status_code}: {response.text}")
    return response.headers["location"]
