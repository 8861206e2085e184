"""Cookie transport: the refresh token of a browser app in an HttpOnly cookie.

With ``?transport=cookie`` the token routes answer the usual ``TokenPair`` with
``refresh_token: null`` and set two cookies instead:

- ``__Host-aixiate_refresh``: the refresh token; HttpOnly, so no script (and no XSS)
  reads it; ``SameSite=Strict``, so no other site's page makes the browser send it.
- ``__Host-aixiate_csrf``: a CSRF token scripts can read (also sent as the
  ``X-CSRF-Token`` response header, for apps on another host, which cannot read the
  API's cookies). It is an HMAC of the refresh token under the service's secret, so it is
  bound to that token (another session's value fails) and needs no storage; it changes
  with every rotation.

Refreshing or logging out by cookie needs the ``X-CSRF-Token`` header equal to both the
CSRF cookie and the HMAC of the refresh cookie, and, when the browser sends ``Origin``,
one of the browser origins (``AIXIATE_CORS_ORIGINS`` and ``AIXIATE_PUBLIC_URL``'s) or
the API's own: double-submit plus an origin check, on top of SameSite.
"""

import hmac
from dataclasses import dataclass
from typing import Literal

from aixiate_core.crypto import keyed_digest
from aixiate_core.settings import origin_of
from fastapi import Request, Response

from aixiate_auth.errors import CsrfFailed, InvalidRefreshToken
from aixiate_auth.schemas import TokenPair

REFRESH_COOKIE = "__Host-aixiate_refresh"
CSRF_COOKIE = "__Host-aixiate_csrf"
CSRF_HEADER = "X-CSRF-Token"

#: ``body``: the refresh token travels in JSON (native apps, servers); ``cookie``: in the
#: HttpOnly cookie (browser apps).
Transport = Literal["body", "cookie"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CookieTransport:
    secret_key: str
    #: Origins whose pages may refresh and log out by cookie.
    origins: frozenset[str]

    def csrf_token(self, refresh_token: str) -> str:
        return keyed_digest(self.secret_key, f"csrf\x00{refresh_token}")

    def issue(self, response: Response, pair: TokenPair) -> TokenPair:
        """Moves the refresh token of ``pair`` into the cookie; the body keeps the rest."""
        assert pair.refresh_token is not None  # a pair just issued always has one
        csrf = self.csrf_token(pair.refresh_token)
        max_age = pair.refresh_expires_in
        response.set_cookie(
            REFRESH_COOKIE,
            pair.refresh_token,
            max_age=max_age,
            path="/",
            secure=True,
            httponly=True,
            samesite="strict",
        )
        response.set_cookie(
            CSRF_COOKIE, csrf, max_age=max_age, path="/", secure=True, samesite="strict"
        )
        response.headers[CSRF_HEADER] = csrf
        return pair.model_copy(update={"refresh_token": None})

    def clear(self, response: Response) -> None:
        for name, httponly in ((REFRESH_COOKIE, True), (CSRF_COOKIE, False)):
            response.delete_cookie(
                name, path="/", secure=True, httponly=httponly, samesite="strict"
            )

    def refresh_token(self, request: Request, *, required: bool = True) -> str | None:
        """The refresh cookie of a request that passed the CSRF checks.

        403 ``csrf_failed`` for a foreign ``Origin`` or a missing or wrong
        ``X-CSRF-Token``; without a refresh cookie, 401 ``invalid_token`` (or None when
        not ``required``: a logout with nothing left to end)."""
        origin = request.headers.get("origin")
        if origin is not None and origin not in self.origins | {_own_origin(request)}:
            raise CsrfFailed("Requests from this origin may not use the session cookie.")
        refresh = request.cookies.get(REFRESH_COOKIE)
        if not refresh:
            if required:
                raise InvalidRefreshToken("There is no session cookie; sign in again.")
            return None
        header = request.headers.get(CSRF_HEADER, "")
        cookie = request.cookies.get(CSRF_COOKIE, "")
        expected = self.csrf_token(refresh)
        # Both comparisons always run: the time taken says nothing about which failed.
        matches_cookie = hmac.compare_digest(header.encode(), cookie.encode())
        matches_session = hmac.compare_digest(header.encode(), expected.encode())
        if not header or not (matches_cookie and matches_session):
            raise CsrfFailed()
        return refresh


def _own_origin(request: Request) -> str:
    return origin_of(str(request.base_url))
