// Aixiate reference single-page app: a browser session with the refresh token in an
// HttpOnly cookie.
//
// Where each secret lives, and why:
//
// - The refresh token is the long-lived credential. The API keeps it in the
//   `__Host-aixiate_refresh` cookie: HttpOnly (no script can read it, so an XSS bug cannot
//   steal it), Secure, SameSite=Strict, Path=/, host-only. This code never sees it; the
//   browser sends it with `credentials: "include"` to the API's own host.
// - The access token (short-lived, 15 minutes by default) is held in a variable of this
//   module and nowhere else: not in localStorage, sessionStorage or a cookie. A reload
//   loses it; the app then gets a new one from the refresh cookie.
// - The CSRF token (double-submit): the API sets it in the readable
//   `__Host-aixiate_csrf` cookie and in the `X-CSRF-Token` response header. Every call that
//   the refresh cookie authenticates (refresh, logout) must echo it in the `X-CSRF-Token`
//   request header. A page on another origin cannot send that header (the CORS preflight
//   refuses it) and, on another site, the browser does not even send the cookie.
//
// Nothing here needs a build step; every fetch goes to `${api}/api/v1/...`.

const CSRF_COOKIE = "__Host-aixiate_csrf";
const CSRF_HEADER = "X-CSRF-Token";
const CSRF_STORAGE_KEY = "aixiate.csrf";
const DEFAULT_API = "http://localhost:8000";

// Refresh this long before the access token expires: 60 s, or a fifth of its lifetime
// when that is shorter (a 30 s token is refreshed after 24 s, a 15 min one after 14 min).
const REFRESH_LEAD_SECONDS = 60;
const REFRESH_LEAD_FRACTION = 0.2;
// After a failed refresh that did not end the session, try again this much later.
const RETRY_SECONDS = 10;
// Give up on a request after this long (a refresh holds the lock other tabs wait for).
const REQUEST_TIMEOUT_MS = 15000;

const api = apiBase();

// --- state: memory only -------------------------------------------------------------

let accessToken = null; // never written anywhere else
let accessTokenExpiresAt = 0; // ms since the epoch, from expires_in (the JWT is opaque to us)
let refreshes = 0; // silent refreshes since this page loaded (startup included)
let refreshTimer = null;
let nextRefreshAt = null; // ms since the epoch
let refreshInFlight = null; // the one refresh running in this tab, if any
let pendingMfaToken = null; // between the two steps of a login with two-step verification

// --- configuration ------------------------------------------------------------------

/** The API base URL: `?api=`, else window.AIXIATE_API (config.js), else localhost:8000. */
function apiBase() {
  const fromQuery = new URLSearchParams(location.search).get("api");
  // Honour ?api= only on a development page: on a deployed page a crafted link
  // (https://app.example.com/?api=https://evil.example) would make the login form post
  // the user's password to whoever wrote it.
  const host = location.hostname;
  const development =
    host === "localhost" || host.endsWith(".localhost") || ["127.0.0.1", "[::1]"].includes(host);
  const chosen = (development && fromQuery) || window.AIXIATE_API || DEFAULT_API;
  const url = new URL(chosen);
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new Error(`unsupported API URL: ${chosen}`);
  }
  return url.href.replace(/\/+$/, "");
}

// --- the CSRF token -----------------------------------------------------------------

function readCookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

/**
 * The CSRF token to echo. When this page is on the API's host (any port: cookies ignore
 * ports) the cookie is visible and is the truth. Otherwise the app falls back to the last
 * `X-CSRF-Token` response header, kept in localStorage so that a reload or another tab can
 * still refresh. Keeping it there is fine: the CSRF token is not a credential on its own.
 * It only proves that the request comes from a page that could read the API's answers;
 * the credential is the refresh cookie, which stays HttpOnly.
 */
function csrfToken() {
  return readCookie(CSRF_COOKIE) ?? localStorage.getItem(CSRF_STORAGE_KEY);
}

function rememberCsrf(response) {
  // The API lists X-CSRF-Token in Access-Control-Expose-Headers; without that a
  // cross-origin page would read null here.
  const value = response.headers.get(CSRF_HEADER);
  if (value) localStorage.setItem(CSRF_STORAGE_KEY, value);
}

// --- HTTP ---------------------------------------------------------------------------

/** An RFC 9457 problem answer: `detail` is for people, `code` is for code. */
class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || `http_${status}`;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }
}

/**
 * One call to the API. `bearer` adds the access token, `csrf` the CSRF header; every call
 * includes credentials so that the browser sends (and stores) the API's cookies.
 */
async function call(method, path, { body, bearer = false, csrf = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (bearer && accessToken) headers.Authorization = `Bearer ${accessToken}`;
  if (csrf) headers[CSRF_HEADER] = csrfToken() ?? "";
  let response;
  try {
    response = await fetch(`${api}/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "include",
      cache: "no-store",
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch {
    // fetch rejects on network failures, timeouts and CORS refusals alike.
    throw new ApiError(0, { code: "network_error", detail: `Cannot reach the API at ${api}.` });
  }
  rememberCsrf(response);
  if (response.status === 204) return null;
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, answer, response.headers.get("Retry-After"));
  return answer;
}

/** A call with the access token; an expired one is refreshed once and the call retried. */
async function authorized(method, path, options = {}) {
  try {
    return await call(method, path, { ...options, bearer: true });
  } catch (error) {
    if (error.status !== 401 || error.code !== "invalid_token") throw error;
    await refreshSession();
    return call(method, path, { ...options, bearer: true });
  }
}

// --- tokens and the refresh schedule -------------------------------------------------

/** Takes a TokenPair of the cookie transport (its refresh_token is null). */
function acceptTokens(pair) {
  accessToken = pair.access_token;
  accessTokenExpiresAt = Date.now() + pair.expires_in * 1000;
  const lead = Math.min(REFRESH_LEAD_SECONDS, pair.expires_in * REFRESH_LEAD_FRACTION);
  scheduleRefresh((pair.expires_in - lead) * 1000);
}

function scheduleRefresh(delayMs) {
  clearTimeout(refreshTimer);
  nextRefreshAt = Date.now() + delayMs;
  refreshTimer = setTimeout(() => {
    refreshSession().catch(showError);
  }, delayMs);
  $("next-refresh").textContent = new Date(nextRefreshAt).toLocaleTimeString();
}

/**
 * Rotates the refresh cookie and gets a new access token. One refresh at a time: the API
 * detects reuse, and a second refresh presenting the cookie the first one just rotated
 * would end the session. Within this tab a running refresh is shared; across tabs of this
 * origin the Web Locks API queues them, and each reads the then-current cookie and CSRF
 * token when its turn comes.
 */
function refreshSession() {
  refreshInFlight ??= withRefreshLock(refreshOnce).finally(() => {
    refreshInFlight = null;
  });
  return refreshInFlight;
}

function withRefreshLock(task) {
  if (!navigator.locks) return task();
  return navigator.locks.request("aixiate-refresh", task);
}

async function refreshOnce() {
  try {
    // No body: the refresh token is the cookie. The CSRF token is read now, not earlier:
    // it changes with every rotation.
    const pair = await call("POST", "/auth/refresh?transport=cookie", { csrf: true });
    acceptTokens(pair);
    refreshes += 1;
    $("refresh-count").textContent = String(refreshes);
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      // invalid_token (no, expired or revoked session), token_reused (the session was
      // ended because an old refresh token came back), csrf_failed: signed out.
      forgetSession();
    } else if (accessToken) {
      // Unreachable, busy (429) or failing: keep the user signed in and try again later.
      scheduleRefresh((Number(error.retryAfter) || RETRY_SECONDS) * 1000);
    }
    throw error;
  }
}

// When a sleeping laptop wakes up, timers fire late; catch up as soon as the page shows.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && accessToken && Date.now() >= nextRefreshAt) {
    refreshSession().catch(showError);
  }
});

/** Forgets everything this page knows about the session (the cookies are the API's). */
function forgetSession() {
  accessToken = null;
  accessTokenExpiresAt = 0;
  clearTimeout(refreshTimer);
  refreshTimer = null;
  nextRefreshAt = null;
  localStorage.removeItem(CSRF_STORAGE_KEY);
  $("sessions").replaceChildren();
  $("me-email").textContent = "";
  setView("signed-out");
}

// --- the user's actions --------------------------------------------------------------

async function register() {
  const answer = await call("POST", "/auth/register", { body: credentials() });
  // 202 whether or not the address already had an account (no account enumeration).
  showStatus("info", "registered", answer.detail);
}

async function login() {
  // transport=cookie: the refresh token comes back as the HttpOnly cookie, not in the body.
  const answer = await call("POST", "/auth/login?transport=cookie", { body: credentials() });
  if (answer.mfa_required) {
    pendingMfaToken = answer.mfa_token;
    $("mfa-form").hidden = false;
    $("credentials-form").hidden = true;
    $("mfa-code").focus();
    showStatus("info", "mfa-required", `Enter a code (${answer.mfa_methods.join(", ")}).`);
    return;
  }
  await signedIn(answer);
}

async function loginMfa() {
  const body = { mfa_token: pendingMfaToken, code: $("mfa-code").value.trim() };
  try {
    await signedIn(await call("POST", "/auth/login/mfa?transport=cookie", { body }));
  } catch (error) {
    // A used or expired mfa_token (5 minutes) cannot be retried: start over.
    if (error.code === "invalid_mfa_token") cancelMfa();
    throw error;
  }
}

function cancelMfa() {
  pendingMfaToken = null;
  $("mfa-code").value = "";
  $("mfa-form").hidden = true;
  $("credentials-form").hidden = false;
}

async function signedIn(pair) {
  cancelMfa();
  $("password").value = ""; // do not keep the password around in the DOM
  acceptTokens(pair);
  await showAccount();
  showStatus("info", "signed-in", "Signed in.");
}

async function logout() {
  try {
    // No access token needed: the cookie names the session (after a reload the page may
    // not have a token yet), and the CSRF header proves that this app is asking.
    await call("POST", "/auth/logout?transport=cookie", { csrf: true });
  } finally {
    // Whatever the answer, this page forgets the session; on success the API has ended it
    // and cleared both cookies.
    forgetSession();
  }
  showStatus("info", "signed-out", "Signed out.");
}

async function revokeSession(id) {
  await authorized("DELETE", `/auth/sessions/${encodeURIComponent(id)}`);
  const current = $("sessions").querySelector(`li[data-session-id="${CSS.escape(id)}"]`);
  if (current?.dataset.current === "true") {
    forgetSession(); // that was this browser's own session
    showStatus("info", "signed-out", "This session was revoked.");
    return;
  }
  await showSessions();
  showStatus("info", "session-revoked", "Session revoked.");
}

// --- rendering -----------------------------------------------------------------------

async function showAccount() {
  const me = await authorized("GET", "/users/me");
  $("me-email").textContent = me.email;
  $("me-roles").textContent = me.roles.length ? `(${me.roles.join(", ")})` : "";
  await showSessions();
  setView("signed-in");
}

async function showSessions() {
  const sessions = await authorized("GET", "/auth/sessions");
  // textContent only, never innerHTML: user agents and other strings come from whoever
  // called the API, and a script injected here could use the access token.
  const items = sessions.map((session) => {
    const item = document.createElement("li");
    item.dataset.sessionId = session.id;
    item.dataset.current = String(session.current);
    const lastUsed = new Date(session.last_used_at).toLocaleString();
    item.textContent =
      `${session.current ? "This browser" : session.user_agent || "unknown client"}` +
      ` - ${session.ip || "unknown address"} - last used ${lastUsed} `;
    const revoke = document.createElement("button");
    revoke.type = "button";
    revoke.className = "revoke";
    revoke.dataset.sessionId = session.id;
    revoke.textContent = "Revoke";
    item.append(revoke);
    return item;
  });
  $("sessions").replaceChildren(...items);
}

function setView(view) {
  document.body.dataset.view = view;
}

function showStatus(kind, code, text) {
  const status = $("status");
  status.dataset.kind = kind;
  status.dataset.code = code;
  status.textContent = text;
}

/** Shows a problem: its `detail`, with advice chosen by its `code`. */
function showError(error) {
  let text = error.message;
  switch (error.code) {
    case "invalid_credentials":
      text = "Wrong email or password.";
      break;
    case "email_not_verified":
      text += " Follow the link in the email we sent you, then log in.";
      break;
    case "weak_password":
      text += error.problem.reason ? ` (${error.problem.reason})` : "";
      break;
    case "account_locked":
    case "rate_limited":
      text += error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
      break;
    case "token_reused":
      text = "This session was ended for safety (an old refresh token was used). Log in again.";
      break;
    case "invalid_token":
    case "csrf_failed":
      text = "Your session has ended. Log in again.";
      break;
    default:
      break;
  }
  showStatus("error", error.code || "error", text);
}

function credentials() {
  return { email: $("email").value.trim(), password: $("password").value };
}

function $(id) {
  return document.getElementById(id);
}

/** Runs a user action, showing any error it ends with. */
function action(task) {
  return (event) => {
    event?.preventDefault();
    task(event).catch(showError);
  };
}

// --- start ---------------------------------------------------------------------------

$("api-url").textContent = api;
$("credentials-form").addEventListener("submit", action(login));
$("register").addEventListener("click", action(register));
$("mfa-form").addEventListener("submit", action(loginMfa));
$("mfa-cancel").addEventListener("click", () => cancelMfa());
$("logout").addEventListener("click", action(logout));
$("refresh-now").addEventListener("click", action(() => refreshSession()));
$("reload-sessions").addEventListener("click", action(showSessions));
$("sessions").addEventListener("click", (event) => {
  const button = event.target.closest("button.revoke");
  if (button) action(() => revokeSession(button.dataset.sessionId))(event);
});

/**
 * A reload keeps no access token, but the refresh cookie is still there: ask for a new
 * pair at once. Without any CSRF token this browser has no session to resume (it logged
 * out, or never logged in here), so the request is not even made.
 */
async function start() {
  if (!csrfToken()) {
    setView("signed-out");
    return;
  }
  try {
    await refreshSession();
    await showAccount();
  } catch (error) {
    setView("signed-out");
    // A 401 or 403 just means "not signed in" (refreshSession forgot the session). Anything
    // else (the API is down) is worth showing, and the stored CSRF token is kept for the
    // next try.
    if (error.status !== 401 && error.status !== 403) showError(error);
  }
}

// A debugging aid (and what tests/test_browser.py drives): read-only facts about the
// session and a way to refresh at once. It exposes no token.
window.aixiate = Object.freeze({
  state: () => ({
    view: document.body.dataset.view,
    hasAccessToken: accessToken !== null,
    accessTokenExpiresAt,
    refreshes,
    nextRefreshAt,
  }),
  refreshNow: () => refreshSession().then(() => refreshes),
});

start();
