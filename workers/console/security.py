"""Who may use the console, and which requests may change anything.

- Named operators (issue 24.4): a token from ``emotionviz operator add NAME --scope
  read|write`` (workers/operations/operators.py; only its SHA-256 is stored) signs in
  as NAME, by the form or as ``Authorization: Bearer``. A read token sees every page;
  every unsafe request (a POST other than sign-in and sign-out) needs a write token,
  refused here with 403 and one line otherwise. A session holds the token's hash
  (never the token), and a revoked token stops working within ``OPERATOR_RECHECK_S``.
  Every change and every read of a person's entry text is recorded under the name.
- The shared token stays for development on loopback, signing in as ``shared-token``
  with write scope, as before: sent as ``Authorization: Bearer`` (scripts) or typed
  once into the login form, which stores a mark derived from it in a signed, HttpOnly,
  SameSite=Strict session cookie. Tokens are compared in constant time. The cookie's
  signing key and the mark are both derived from the token, so rotating the token
  signs everybody out.
- Without CONSOLE_TOKEN the console makes a token for the run, and only on a loopback
  address: any local user or process (or a web page rebinding its DNS name to
  127.0.0.1) can reach loopback, so loopback is not a reason to skip the token.
- Every state-changing request is a POST whose Origin (or Referer) names this host and
  whose form carries the session's CSRF token; Bearer requests, which a browser never
  sends on its own, skip the form token.
- Every response carries a Content-Security-Policy without inline scripts or styles.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.errors import ConfigurationError, EmotionVizError
from workers.settings import Settings

MIN_TOKEN_CHARS = 16
SESSION_COOKIE = "emotionviz_console"
SESSION_MAX_AGE_S = 12 * 3600
MAX_FORM_BYTES = 64 * 1024
FORM_SCOPE_KEY = "console.form"
CSRF_FIELD = "csrf"
PUBLIC_PATHS = frozenset({"/login", "/healthz"})
SAFE_METHODS = frozenset({"GET", "HEAD"})
# Unsafe, yet open to a read token: signing in and out change no data.
READ_SCOPE_POSTS = frozenset({"/login", "/logout"})
OPERATOR_SCOPE_KEY = "console.operator"
SHARED_OPERATOR = "shared-token"  # who the shared token signs in as, in the trail
OPERATOR_RECHECK_S = 10.0  # a revoked token's sessions end within this

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # 'same-origin', not 'no-referrer': with no-referrer a browser sends "Origin: null"
    # on our own form posts, and the origin check below would refuse them.
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}

Form = dict[str, list[str]]
Refuse = Callable[[Request, int, str], Response]


@dataclass(frozen=True)
class ConsoleOperator:
    """Who is signed in: an operator's name and scope, or the shared token."""

    name: str
    scope: str  # read | write

    @property
    def may_write(self) -> bool:
        return self.scope == "write"


SHARED = ConsoleOperator(SHARED_OPERATOR, "write")
# Nobody signed in (a public page): no scope, so whatever reads it fails closed.
NOBODY = ConsoleOperator("nobody", "none")
# token hash -> the live operator (None: unknown or revoked); a sign-in looks it up.
Lookup = Callable[[str], ConsoleOperator | None]


class OperatorCache:
    """Live operators by token hash, each looked up again after OPERATOR_RECHECK_S: a
    page costs no database query, and a revoke takes effect within seconds."""

    def __init__(self, lookup: Lookup, ttl_s: float = OPERATOR_RECHECK_S) -> None:
        self.lookup, self.ttl_s = lookup, ttl_s
        self._seen: dict[str, tuple[float, ConsoleOperator | None]] = {}
        self._lock = threading.Lock()

    def get(self, token_sha256: str) -> ConsoleOperator | None:
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(token_sha256)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        found = self.lookup(token_sha256)
        with self._lock:
            if len(self._seen) > 10_000:  # wrong tokens must not grow it forever
                self._seen.clear()
            self._seen[token_sha256] = (now, found)
        return found


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def operator_of(request: Request) -> ConsoleOperator:
    """Who made this request (set by the Guard on every signed-in request); NOBODY,
    who may not write, when nobody is signed in (never the shared token's write scope)."""
    found = request.scope.get(OPERATOR_SCOPE_KEY)
    return found if isinstance(found, ConsoleOperator) else NOBODY


@dataclass(frozen=True)
class ConsoleAuth:
    token: str
    generated: bool  # made for this run (no CONSOLE_TOKEN): printed once at start

    def matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def _derive(self, purpose: str) -> str:
        return hmac.new(self.token.encode(), purpose.encode(), hashlib.sha256).hexdigest()

    @property
    def session_mark(self) -> str:
        """What a signed-in session holds: derived from the token, never the token."""
        return self._derive("emotionviz-console:session")

    @property
    def signing_key(self) -> str:
        return self._derive("emotionviz-console:cookie-signing")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def resolve_auth(settings: Settings, host: str) -> ConsoleAuth:
    """CONSOLE_TOKEN, or a token for this run on loopback; refuse anything else."""
    if settings.console_token is not None:
        token = settings.console_token.get_secret_value()
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigurationError(
                f"CONSOLE_TOKEN must be at least {MIN_TOKEN_CHARS} characters "
                "(make one: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return ConsoleAuth(token, generated=False)
    if not is_loopback(host):
        raise ConfigurationError(
            f"refusing to listen on {host} without CONSOLE_TOKEN: set it (16+ characters), "
            "or listen on 127.0.0.1"
        )
    return ConsoleAuth(secrets.token_urlsafe(32), generated=True)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def local_path(candidate: str | None, default: str = "/") -> str:
    """A redirect target on this site only (no //host, no scheme): no open redirect."""
    if not candidate or not candidate.startswith("/") or candidate.startswith(("//", "/\\")):
        return default
    return candidate


def form_of(request: Request) -> Form:
    """The POST's form, parsed (and CSRF-checked) by the Guard."""
    form: Form = request.scope.get(FORM_SCOPE_KEY, {})
    return form


def first(form: Form, name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


class SecurityHeaders:
    """The headers above on every response; pages are never cached (they hold live,
    private data), static files briefly."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                headers["cache-control"] = "private, max-age=300" if static else "no-store"
            await send(message)

        await self.app(scope, receive, with_headers)


class Guard:
    """Authentication on every path but /login, /healthz and /static/; for every
    unsafe method: same origin, a urlencoded form of bounded size, the CSRF token."""

    def __init__(
        self, app: ASGIApp, auth: ConsoleAuth, refuse: Refuse, operators: OperatorCache
    ) -> None:
        self.app, self.auth, self.refuse, self.operators = app, auth, refuse, operators

    async def _who(self, request: Request, bearer: str | None) -> ConsoleOperator | None:
        """The operator behind a Bearer token or the session; None: not signed in."""
        if bearer is not None:
            if self.auth.matches(bearer):
                return SHARED
            return await run_in_threadpool(self.operators.get, token_sha256(bearer))
        if not hmac.compare_digest(str(request.session.get("auth", "")), self.auth.session_mark):
            return None
        hashed = request.session.get("operator")
        if not hashed:
            return SHARED
        found = await run_in_threadpool(self.operators.get, str(hashed))
        if found is None:
            request.session.clear()  # revoked since: signed out
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        bearer = _bearer(request)
        try:
            who = await self._who(request, bearer)
        except EmotionVizError:  # the operators table unreadable: say so, no 500
            await self.refuse(
                request, 503, "cannot check the operator token: the database is unavailable"
            )(scope, receive, send)
            return
        if bearer is not None and who is None:
            await self.refuse(request, 401, "wrong token")(scope, receive, send)
            return
        path = request.url.path
        if who is None and path not in PUBLIC_PATHS and not path.startswith("/static/"):
            await self.refuse(request, 401, "sign in first")(scope, receive, send)
            return
        if who is not None:
            scope[OPERATOR_SCOPE_KEY] = who
        if request.method in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        if bearer is None and not _same_origin(request):
            await self.refuse(request, 403, "refused: this request did not come from the console")(
                scope, receive, send
            )
            return
        if who is not None and not who.may_write and path not in READ_SCOPE_POSTS:
            await self.refuse(
                request,
                403,
                f"refused: {who.name}'s token has read scope; this needs a write token",
            )(scope, receive, send)
            return
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            await self.refuse(request, 415, "a form post is expected")(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            await self.refuse(request, 413, "form too large")(scope, receive, send)
            return
        form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        expected = str(request.session.get("csrf", ""))
        sent = first(form, CSRF_FIELD) or ""
        if bearer is None and not (expected and hmac.compare_digest(sent, expected)):
            await self.refuse(
                request, 403, "refused: the form's security token is missing or stale"
            )(scope, receive, send)
            return
        scope[FORM_SCOPE_KEY] = form
        await self.app(scope, _replay(body, receive), send)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _same_origin(request: Request) -> bool:
    """Origin (or, without it, Referer) names the host this request was sent to."""
    host = request.headers.get("host", "").lower()
    source = request.headers.get("origin") or request.headers.get("referer")
    if not host or not source or source == "null":
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host


async def _read_body(receive: Receive) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
