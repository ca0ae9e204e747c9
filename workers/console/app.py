"""The console's ASGI application: templates, middleware, sign-in, error pages.

Order of the layers, outermost first: security headers, the signed session cookie,
the Guard (authentication, origin and CSRF checks), the routes (pages.py, actions.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from domain.errors import EmotionVizError
from workers.console import actions, jobs_pages, pages, queues
from workers.console.security import (
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    ConsoleAuth,
    ConsoleOperator,
    Guard,
    OperatorCache,
    SecurityHeaders,
    first,
    form_of,
    local_path,
    new_csrf_token,
    token_sha256,
)
from workers.console.web import render, signed_in, templates
from workers.logging import get_logger, scrub
from workers.operations import operators
from workers.operations.readable import translate
from workers.settings import Settings

log = get_logger("emotionviz.console")
FAILED_SIGN_IN_DELAY_S = 0.5


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def refuse(request: Request, status: int, reason: str) -> Response:
    """Guard's answer: the sign-in form (401) or one line (403, 413, 415)."""
    if status in (401, 403):
        log.warning(
            "console request refused",
            status=status,
            path=request.url.path,
            client=request.client.host if request.client else None,
            reason=reason,
        )
    headers = {"www-authenticate": 'Bearer realm="emotionviz console"'} if status == 401 else {}
    if not _wants_html(request):
        return JSONResponse({"error": reason}, status_code=status, headers=headers)
    if status == 401 and request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = render(request, "login.html", {"next": target, "error": None}, 401)
    else:
        response = render(request, "error.html", {"status": status, "message": reason}, status)
    response.headers.update(headers)
    return response


# --- sign-in ---------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    if signed_in(request):
        return RedirectResponse(local_path(request.query_params.get("next")), status_code=303)
    return render(
        request, "login.html", {"next": request.query_params.get("next", "/"), "error": None}
    )


def lookup_operator(hashed: str) -> ConsoleOperator | None:
    """The live named operator whose token hashes to ``hashed`` (workers/operations)."""
    row = operators.by_token_hash(hashed)
    return None if row is None else ConsoleOperator(row.name, row.scope)


async def login(request: Request) -> Response:
    form = form_of(request)
    auth: ConsoleAuth = request.app.state.auth
    cache: OperatorCache = request.app.state.operators
    target = local_path(first(form, "next"))
    token = first(form, "token") or ""
    hashed = token_sha256(token)
    named = None if auth.matches(token) else await run_in_threadpool(cache.get, hashed)
    if named is not None:
        request.session.clear()
        request.session.update(
            {"auth": auth.session_mark, "operator": hashed, "csrf": new_csrf_token()}
        )
        log.info("console sign-in", operator=named.name, scope=named.scope, client=_client(request))
        return RedirectResponse(target, status_code=303)
    if not auth.matches(token):
        await asyncio.sleep(FAILED_SIGN_IN_DELAY_S)  # slows guessing; the token is long anyway
        log.warning(
            "console sign-in failed", client=request.client.host if request.client else None
        )
        return render(
            request, "login.html", {"next": target, "error": "That token is not right."}, 401
        )
    request.session.clear()
    request.session.update({"auth": auth.session_mark, "csrf": new_csrf_token()})
    log.info("console sign-in", client=_client(request))
    return RedirectResponse(target, status_code=303)


async def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _unavailable(request: Request, exc: Exception) -> Response:
    """PostgreSQL or Redis down, or a row gone: one line, like the CLI (503)."""
    translated = translate(exc)
    line = translated[1] if translated else f"{type(exc).__name__}: {exc}"
    log.warning("console page failed", path=request.url.path, error=line)
    if not _wants_html(request):
        return JSONResponse({"error": scrub(line)}, status_code=503)
    return render(request, "error.html", {"status": 503, "message": line}, 503)


async def _bug(request: Request, exc: Exception) -> Response:
    # Outside the session and header layers (Starlette sends it last): plain text.
    log.error("console page failed", path=request.url.path, exc_info=exc)
    return PlainTextResponse("unexpected error (the console's log has the traceback)", 500)


def build_app(
    settings: Settings,
    auth: ConsoleAuth,
    lookup: Callable[[str], ConsoleOperator | None] | None = None,
) -> Starlette:
    """``lookup``: a token hash -> its live operator (default: the operators table)."""
    operator_cache = OperatorCache(lookup or lookup_operator)
    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        *pages.routes(),
        *actions.routes(),
        *queues.routes(),
        *jobs_pages.routes(),  # find jobs, replay many (issue 24.1-24.2)
        Mount("/static", app=StaticFiles(packages=[("workers.console", "static")]), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=auth.signing_key,
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_MAX_AGE_S,
            same_site="strict",
            https_only=settings.console_secure_cookie,
        ),
        Middleware(Guard, auth=auth, refuse=refuse, operators=operator_cache),
    ]
    handlers = {EmotionVizError: _unavailable, redis.RedisError: _unavailable, Exception: _bug}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
    app.state.settings = settings
    app.state.auth = auth
    app.state.operators = operator_cache
    app.state.templates = templates()
    return app
