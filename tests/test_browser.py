"""Browser sessions in a real browser: the reference single-page app (``examples/spa``)
in headless Chromium, against the real service in a process of its own.

The page is served from ``http://localhost:<spa port>`` and talks to the API at
``http://localhost:<api port>``: another origin (CORS applies) but the same site, which
is what a ``SameSite=Strict`` refresh cookie needs. What only a browser can show is
checked here: a session that outlives a reload although the access token lives in
memory only, the refresh cookie out of reach of page scripts, the CORS preflight, the
cookie's ``SameSite`` attribute and the CSRF check stopping a page of another origin,
an app on another host of the site getting by on the ``X-CSRF-Token`` header, and the
second step of a login with two-step verification. The HTTP details of the cookie
transport are tested over HTTP in the auth package.

Chromium and its driver come from Debian (``apt-get install chromium chromium-driver``);
selenium is told where they are and never downloads anything.
"""

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import httpx
import pyotp
import pytest
from aixiate_core.testing import assert_problem, bearer
from aixiate_users.testing import PASSWORD
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason=(
        f"needs Chromium at {CHROMIUM} and its driver at {CHROMEDRIVER} "
        "(Debian: apt-get install chromium chromium-driver)"
    ),
)

SPA_DIR = Path(__file__).resolve().parent.parent / "examples" / "spa"
API = "/api/v1"
REFRESH_COOKIE = "__Host-aixiate_refresh"
CSRF_COOKIE = "__Host-aixiate_csrf"
#: The shortest access token the service allows: the app's timer refreshes it a fifth of
#: its lifetime before it expires, 24 s after login, which one test waits for.
ACCESS_TTL_SECONDS = 30
REFRESH_LEAD_MS = ACCESS_TTL_SECONDS * 1000 // 5
#: An app and an API on hosts of their own, of one site (app.example.com and
#: api.example.com in production). Browsers resolve *.localhost to the loopback address
#: and treat it as a secure context, as they do localhost, so Secure cookies work on http.
APP_HOST = "app.aixiate.localhost"
API_HOST = "api.aixiate.localhost"
#: Upper bound of every wait for the page; the scheduled refresh gets its own.
WAIT_SECONDS = 15.0


# --- servers of the page and of the attacker's page ----------------------------------------


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving(handler: Callable[..., BaseHTTPRequestHandler]) -> Iterator[int]:
    """A threaded HTTP server on 127.0.0.1 until the block ends; gives its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="http-server", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def on_host(url: str, host: str) -> str:
    """``url`` with another host name, same scheme and port."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"{host}:{parts.port}").geturl()


@pytest.fixture(scope="module")
def spa_origin() -> Iterator[str]:
    """``examples/spa`` as it is, the way ``python -m http.server`` serves it."""
    with serving(partial(_QuietFiles, directory=str(SPA_DIR))) as port:
        yield f"http://localhost:{port}"


@pytest.fixture(scope="module")
def service_extra_env(spa_origin: str) -> dict[str, str]:
    """The page's origins are the ones the API lets in; access tokens are short-lived so that
    the app's own timer refreshes one within the test."""
    return {
        "AIXIATE_CORS_ORIGINS": f"{spa_origin},{on_host(spa_origin, APP_HOST)}",
        "AIXIATE_ACCESS_TOKEN_TTL_SECONDS": str(ACCESS_TTL_SECONDS),
    }


@pytest.fixture(scope="module")
def api_url(service_url: str) -> str:
    """The API as the page knows it: on localhost like the page, hence the same site
    (127.0.0.1 would be another site, and the browser would keep the cookies to itself)."""
    return service_url.replace("://127.0.0.1:", "://localhost:")


#: What a page on another origin tries while the victim is signed in in the same browser.
#: Each attempt records what the page got to see; ``window.attack`` holds them all.
EVIL_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Free prizes</title>
<form id="form" method="POST" action="" target="sink" enctype="text/plain">
  <input name="x" value="y">
</form>
<script>
const target = %(target)s;
const results = {cookies: document.cookie};
// Same site, other port: the CSRF cookie is readable here (cookies ignore ports).
const csrf = (document.cookie.match(/__Host-aixiate_csrf=([^;]*)/) || [])[1] || "guess";

async function attempt(name, run) {
  try {
    results[name] = await run();
  } catch (error) {
    results[name] = {error: error.name};
  }
}

async function read(response) {
  return {type: response.type, status: response.status, body: await response.text()};
}

(async () => {
  // A custom header: the browser asks first (preflight), and the API does not know us.
  await attempt("preflighted", async () => read(await fetch(target, {
    method: "POST", credentials: "include", headers: {"X-CSRF-Token": csrf},
  })));
  // A "simple" request goes out without asking; only its answer is withheld.
  await attempt("simple", async () => read(await fetch(target, {
    method: "POST", credentials: "include", headers: {"Content-Type": "text/plain"}, body: "{}",
  })));
  await attempt("noCors", async () => read(await fetch(target, {
    method: "POST", mode: "no-cors", credentials: "include",
  })));
  // The classic: a form posted into a hidden frame.
  await attempt("form", () => new Promise((resolve) => {
    const frame = document.createElement("iframe");
    frame.name = "sink";
    document.body.append(frame);
    frame.addEventListener("load", () => {
      try {
        resolve({body: frame.contentWindow.document.body.textContent});
      } catch (error) {
        resolve({error: error.name});
      }
    }, {once: true});
    const form = document.getElementById("form");
    form.action = target;
    form.submit();
  }));
  window.attack = results;
})();
</script>
"""


@pytest.fixture(scope="module")
def evil_port(api_url: str) -> Iterator[int]:
    """A server of the attacker's page, reachable as ``http://127.0.0.1:<port>`` (another
    site than localhost) and as ``http://localhost:<port>`` (same site, other origin)."""
    page = EVIL_PAGE % {"target": json.dumps(f"{api_url}{API}/auth/refresh?transport=cookie")}

    class EvilPage(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(EvilPage) as port:
        yield port


# --- the browser -------------------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """A fresh headless Chromium (a profile of its own: no cookies) per test."""
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    # A path to the driver means selenium-manager is never asked for one.
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.set_script_timeout(WAIT_SECONDS)
        yield driver
    finally:
        driver.quit()


class Spa:
    """The example app in one browser tab, driven by the ids of its elements and its
    ``window.aixiate`` debugging aid."""

    def __init__(self, driver: WebDriver, url: str) -> None:
        self.driver = driver
        self.url = url

    def open(self) -> None:
        self.driver.get(self.url)
        self.wait_for(lambda: self.view() != "loading", "the app to start")

    def wait_for(self, done: Callable[[], bool], what: str, seconds: float = WAIT_SECONDS) -> None:
        """Waits until ``done()``; a timeout fails naming ``what`` and what the page shows."""
        try:
            WebDriverWait(self.driver, seconds, poll_frequency=0.05).until(lambda _: done())
        except TimeoutException:
            pytest.fail(f"waited {seconds} s for {what}; the page shows {self.describe()}")

    def describe(self) -> str:
        status = self.element("status")
        return (
            f"view={self.view()!r}, status={status.get_attribute('data-code')!r} "
            f"{status.text!r}, state={self.state()}"
        )

    def element(self, element_id: str) -> WebElement:
        return self.driver.find_element(By.ID, element_id)

    def text(self, element_id: str) -> str:
        text: str = self.element(element_id).text
        return text

    def view(self) -> str:
        view: str = self.driver.execute_script("return document.body.dataset.view")
        return view

    def status_code(self) -> str | None:
        code: str | None = self.element("status").get_attribute("data-code")
        return code

    def wait_status(self, code: str) -> None:
        self.wait_for(lambda: self.status_code() == code, f"status {code!r}")

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.driver.execute_script(
            "return window.aixiate ? window.aixiate.state() : null"
        )
        return state

    def refresh_now(self) -> int:
        """Refreshes at once through the app (its serialized path); gives the count."""
        outcome: dict[str, Any] = self.driver.execute_async_script(
            """const done = arguments[arguments.length - 1];
            window.aixiate.refreshNow().then(
              (count) => done({count}),
              (error) => done({error: `${error.code}: ${error.message}`}));"""
        )
        assert "error" not in outcome, outcome["error"]
        count: int = outcome["count"]
        return count

    def type(self, element_id: str, text: str) -> None:
        field = self.element(element_id)
        field.clear()
        field.send_keys(text)

    def click(self, element_id: str) -> None:
        self.element(element_id).click()

    def sign_up_and_in(self, email: str) -> None:
        self.type("email", email)
        self.type("password", PASSWORD)
        self.click("register")
        self.wait_status("registered")
        self.log_in(email)

    def log_in(self, email: str) -> None:
        self.type("email", email)
        self.type("password", PASSWORD)
        self.click("login")
        self.wait_status("signed-in")
        assert self.view() == "signed-in"

    def sessions(self) -> list[tuple[str, bool]]:
        """(id, current) of each session the list shows, read in one go (the app
        re-renders the list)."""
        rows: list[list[Any]] = self.driver.execute_script(
            """return Array.from(document.querySelectorAll("#sessions > li"),
                (item) => [item.dataset.sessionId, item.dataset.current === "true"])"""
        )
        return [(str(session_id), bool(current)) for session_id, current in rows]

    def document_cookie(self) -> str:
        """What page scripts see of the cookies."""
        cookies: str = self.driver.execute_script("return document.cookie")
        return cookies

    def cookie(self, name: str) -> dict[str, Any] | None:
        """The browser's own view of a cookie for the page's URL, HttpOnly ones included."""
        return self.driver.get_cookie(name)

    def storage(self) -> str:
        """Everything in the page's localStorage and sessionStorage."""
        dump: str = self.driver.execute_script(
            "return JSON.stringify([{...localStorage}, {...sessionStorage}])"
        )
        return dump


@pytest.fixture
def spa(browser: WebDriver, spa_origin: str, api_url: str) -> Spa:
    return Spa(browser, f"{spa_origin}/?api={api_url}")


def new_email() -> str:
    return f"browser-{uuid4().hex[:12]}@example.com"


def refresh_with(
    service_url: str, cookies: dict[str, str], headers: dict[str, str]
) -> httpx.Response:
    """``/auth/refresh`` with the cookie transport, as a client outside the browser
    would send it with cookies copied out of it."""
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    return httpx.post(
        f"{service_url}{API}/auth/refresh",
        params={"transport": "cookie"},
        headers={"Cookie": cookie, **headers},
        timeout=10,
    )


def session_cookies(spa: Spa) -> dict[str, str]:
    """The values of the refresh and the CSRF cookie in the browser."""
    values: dict[str, str] = {}
    for name in (REFRESH_COOKIE, CSRF_COOKIE):
        cookie = spa.cookie(name)
        assert cookie is not None, f"no {name} cookie"
        values[name] = cookie["value"]
    return values


# --- the tests ---------------------------------------------------------------------------------


def test_a_visitor_signs_up_stays_signed_in_across_a_reload_and_signs_out(
    spa: Spa, service_url: str, spa_origin: str
) -> None:
    """The whole flow through the page: the access token lives in memory only, so the
    app's timer refreshes it and a reload gets a new one from the cookie; another session
    is revoked from the list; logging out clears the cookies for good."""
    email = new_email()
    spa.open()
    assert spa.view() == "signed-out"

    spa.sign_up_and_in(email)

    assert spa.text("me-email") == email
    [(current_id, current)] = spa.sessions()
    assert current
    state = spa.state()
    assert state["hasAccessToken"]
    assert state["refreshes"] == 0
    # The next refresh is set a fifth of the token's lifetime before it expires.
    lead = state["accessTokenExpiresAt"] - state["nextRefreshAt"]
    assert abs(lead - REFRESH_LEAD_MS) < 50, state
    before = session_cookies(spa)

    # Another session of the same user (another device), revoked from this page.
    other = httpx.post(
        f"{service_url}{API}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10
    )
    assert other.status_code == 200, other.text
    other_pair = other.json()
    spa.click("reload-sessions")
    spa.wait_for(lambda: len(spa.sessions()) == 2, "two sessions in the list")
    [other_id] = [session_id for session_id, is_current in spa.sessions() if not is_current]
    spa.driver.find_element(
        By.CSS_SELECTOR, f"#sessions button.revoke[data-session-id='{other_id}']"
    ).click()
    spa.wait_status("session-revoked")
    assert spa.sessions() == [(current_id, True)]
    me = httpx.get(
        f"{service_url}{API}/users/me", headers=bearer(other_pair["access_token"]), timeout=10
    )
    assert me.status_code == 401, me.text
    refreshed = httpx.post(
        f"{service_url}{API}/auth/refresh",
        json={"refresh_token": other_pair["refresh_token"]},
        timeout=10,
    )
    assert refreshed.status_code == 401, refreshed.text

    # The app's own timer refreshes the access token before it expires.
    spa.wait_for(
        lambda: spa.state()["refreshes"] == 1,
        "the scheduled refresh",
        seconds=ACCESS_TTL_SECONDS + WAIT_SECONDS,
    )
    assert spa.text("refresh-count") == "1"
    after = session_cookies(spa)
    assert after[REFRESH_COOKIE] != before[REFRESH_COOKIE]  # rotated
    assert after[CSRF_COOKIE] != before[CSRF_COOKIE]  # and a new CSRF token with it
    assert spa.view() == "signed-in"

    # A reload forgets the access token; the cookie brings the user back.
    spa.driver.refresh()
    spa.wait_for(lambda: spa.view() == "signed-in", "the reloaded page to sign in")
    spa.wait_for(lambda: spa.text("me-email") == email, "the email after the reload")
    assert spa.state()["refreshes"] == 1  # the one at startup
    assert spa.sessions() == [(current_id, True)]  # still the same session
    last = session_cookies(spa)

    spa.click("logout")
    spa.wait_status("signed-out")

    assert spa.view() == "signed-out"
    assert not spa.state()["hasAccessToken"]
    assert spa.cookie(REFRESH_COOKIE) is None
    assert spa.cookie(CSRF_COOKIE) is None
    assert CSRF_COOKIE not in spa.document_cookie()
    # The session is over on the server too, not just forgotten by the browser.
    replayed = refresh_with(
        service_url, last, {"X-CSRF-Token": last[CSRF_COOKIE], "Origin": spa_origin}
    )
    assert replayed.status_code == 401, replayed.text

    spa.driver.refresh()
    spa.wait_for(lambda: spa.view() != "loading", "the reloaded page to start")
    assert spa.view() == "signed-out"
    assert spa.state()["hasAccessToken"] is False


def test_page_scripts_never_see_the_refresh_token(spa: Spa) -> None:
    """The refresh cookie is HttpOnly, Secure, SameSite=Strict and host-only, before and
    after a rotation; page scripts see the CSRF cookie only, and nothing token-like is in
    the page's storage."""
    spa.open()
    spa.sign_up_and_in(new_email())

    csrf_values = []
    for step in ("login", "refresh"):
        if step == "refresh":
            assert spa.refresh_now() == 1
        visible = spa.document_cookie()
        assert f"{CSRF_COOKIE}=" in visible, (step, visible)
        assert REFRESH_COOKIE not in visible, (step, visible)
        refresh = spa.cookie(REFRESH_COOKIE)
        assert refresh is not None, step
        assert refresh["httpOnly"] is True, (step, refresh)
        assert refresh["secure"] is True, (step, refresh)
        assert refresh["sameSite"] == "Strict", (step, refresh)
        assert refresh["path"] == "/", (step, refresh)
        assert refresh["domain"] == "localhost", (step, refresh)  # host-only: no Domain
        assert refresh["value"] not in visible
        csrf = spa.cookie(CSRF_COOKIE)
        assert csrf is not None, step
        assert (csrf["httpOnly"], csrf["secure"], csrf["path"]) == (False, True, "/"), csrf
        csrf_values.append(csrf["value"])
        # The access token is a JWT ("eyJ..."): it must be in no storage of the page.
        stored = spa.storage()
        assert "eyJ" not in stored, (step, stored)
        assert refresh["value"] not in stored, step
    assert csrf_values[0] != csrf_values[1]


@pytest.mark.parametrize(
    "evil_host",
    [
        pytest.param("127.0.0.1", id="another-site"),
        pytest.param("localhost", id="same-site-other-origin"),
    ],
)
def test_a_page_of_another_origin_can_neither_refresh_nor_read_the_session(
    spa: Spa, evil_host: str, evil_port: int, service_url: str, spa_origin: str
) -> None:
    """While the victim is signed in, the attacker's page posts to ``/auth/refresh`` every
    way a page can. From another site the SameSite=Strict cookie is not even sent; from the
    same site (another port of localhost, where the CSRF cookie is readable too) it is, and
    the CSRF check refuses. The page reads no answer, and the session survives: had any
    attempt rotated the refresh token, the app's next refresh would be a reuse, which ends
    the session."""
    evil_origin = f"http://{evil_host}:{evil_port}"
    spa.open()
    spa.sign_up_and_in(new_email())
    victim_tab = spa.driver.current_window_handle

    spa.driver.switch_to.new_window("tab")
    spa.driver.get(f"{evil_origin}/")
    spa.wait_for(
        lambda: spa.driver.execute_script("return window.attack !== undefined"),
        "the attacker's page to finish",
    )
    attack: dict[str, Any] = spa.driver.execute_script("return window.attack")
    spa.driver.close()
    spa.driver.switch_to.window(victim_tab)

    assert REFRESH_COOKIE not in attack["cookies"], attack
    if evil_host == "localhost":  # so the preflighted attempt sent the real CSRF token
        assert CSRF_COOKIE in attack["cookies"], attack
    assert attack["preflighted"] == {"error": "TypeError"}, attack
    assert attack["simple"] == {"error": "TypeError"}, attack
    assert attack["noCors"] == {"type": "opaque", "status": 0, "body": ""}, attack
    assert attack["form"] == {"error": "SecurityError"}, attack

    # Copied out of the browser, the right cookies still fail without the page's proof.
    cookies = session_cookies(spa)
    csrf = cookies[CSRF_COOKIE]
    from_evil = refresh_with(service_url, cookies, {"X-CSRF-Token": csrf, "Origin": evil_origin})
    assert_problem(from_evil, 403, "csrf_failed")
    without_header = refresh_with(service_url, cookies, {"Origin": spa_origin})
    assert_problem(without_header, 403, "csrf_failed")

    # Nothing was rotated: the app refreshes as if nothing happened, and so does a reload.
    assert spa.refresh_now() == 1
    spa.driver.refresh()
    spa.wait_for(lambda: spa.view() != "loading", "the reloaded page to start")
    assert spa.view() == "signed-in", spa.describe()


def test_a_login_with_two_step_verification_asks_for_a_code(spa: Spa, service_url: str) -> None:
    """For an account with two-step verification the app asks for a code (here one of
    the recovery codes) and finishes the login with the cookie transport."""
    email = new_email()
    with httpx.Client(base_url=f"{service_url}{API}", timeout=10) as http:
        assert http.post("/auth/register", json={"email": email, "password": PASSWORD}).is_success
        login = http.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        access = bearer(login.json()["access_token"])
        setup = http.post("/auth/mfa/totp/setup", headers=access)
        assert setup.status_code == 200, setup.text
        app = pyotp.parse_uri(setup.json()["otpauth_uri"])
        assert isinstance(app, pyotp.TOTP)
        confirm = http.post("/auth/mfa/totp/confirm", json={"code": app.now()}, headers=access)
        assert confirm.status_code == 200, confirm.text
        recovery_code: str = confirm.json()["recovery_codes"][0]
    spa.open()

    spa.type("email", email)
    spa.type("password", PASSWORD)
    spa.click("login")
    spa.wait_status("mfa-required")
    # A wrong code: none of those the app shows around now (one step of drift is allowed).
    shown = {app.at(time.time(), counter_offset=offset) for offset in (-1, 0, 1)}
    spa.type("mfa-code", next(code for code in ("000000", "111111", "222222") if code not in shown))
    spa.click("mfa-submit")
    spa.wait_status("invalid_mfa_code")
    spa.type("mfa-code", recovery_code)
    spa.click("mfa-submit")
    spa.wait_status("signed-in")

    assert spa.text("me-email") == email
    assert spa.cookie(REFRESH_COOKIE) is not None
    assert spa.refresh_now() == 1


def test_an_app_on_another_host_of_the_site_uses_the_csrf_header(
    browser: WebDriver, spa_origin: str, api_url: str
) -> None:
    """With the app and the API on hosts of their own (app. and api. of one site) the app
    cannot read the API's CSRF cookie; it keeps the ``X-CSRF-Token`` response header
    instead, and refreshes, resumes after a reload and logs out with it. The API is named
    the way a deployment names it: ``window.AIXIATE_API``, which ``config.js`` sets."""
    app_origin, api_origin = on_host(spa_origin, APP_HOST), on_host(api_url, API_HOST)
    browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": f"window.AIXIATE_API = {json.dumps(api_origin)};"},
    )
    spa = Spa(browser, f"{app_origin}/")

    def api_cookies() -> dict[str, dict[str, Any]]:
        found = browser.execute_cdp_cmd("Network.getCookies", {"urls": [api_origin]})
        return {cookie["name"]: cookie for cookie in found["cookies"]}

    def stored_csrf() -> str | None:
        value: str | None = browser.execute_script("return localStorage.getItem('aixiate.csrf')")
        return value

    spa.open()
    assert spa.text("api-url") == api_origin
    spa.sign_up_and_in(new_email())

    assert spa.document_cookie() == ""  # the API's cookies belong to its own host
    cookies = api_cookies()
    assert cookies[REFRESH_COOKIE]["httpOnly"] is True
    assert stored_csrf() == cookies[CSRF_COOKIE]["value"]

    assert spa.refresh_now() == 1
    rotated = api_cookies()[CSRF_COOKIE]["value"]
    assert rotated != cookies[CSRF_COOKIE]["value"]
    assert stored_csrf() == rotated

    browser.refresh()
    spa.wait_for(lambda: spa.view() != "loading", "the reloaded page to start")
    assert spa.view() == "signed-in", spa.describe()

    spa.click("logout")
    spa.wait_status("signed-out")
    assert api_cookies() == {}
    assert stored_csrf() is None
