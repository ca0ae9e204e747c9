"""Rendering for the console's routes: the template environment (autoescaped, every
value scrubbed of secrets), its context (CSRF token, flash message), ``render``."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from workers.console.security import ConsoleAuth, new_csrf_token, operator_of
from workers.logging import scrub
from workers.operations.readable import age


def _finalize(value: Any) -> Any:
    # Every {{ value }} passes here before autoescaping: no secret is ever shown, even
    # one quoted in an error message or a dead letter.
    return scrub(value) if type(value) is str else value


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    moment = value.astimezone(UTC)
    ago = (datetime.now(UTC) - moment).total_seconds()
    suffix = f"{age(ago)} ago" if ago >= 0 else f"in {age(-ago)}"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC ({suffix})"


def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("workers.console", "templates"),
        autoescape=True,
        finalize=_finalize,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["age"] = age
    env.filters["short"] = lambda value: str(value)[:8]
    return Jinja2Templates(env=env, context_processors=[_context])


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = request.session["csrf"] = new_csrf_token()
    return token


def signed_in(request: Request) -> bool:
    auth: ConsoleAuth = request.app.state.auth
    return hmac.compare_digest(str(request.session.get("auth", "")), auth.session_mark)


def _operator_name(request: Request) -> str:
    """Who is signed in (the Guard's finding), shown in the header."""
    return operator_of(request).name if signed_in(request) else ""


def _context(request: Request) -> dict[str, Any]:
    return {
        "csrf_token": csrf_token(request),
        "signed_in": signed_in(request),
        "operator_name": _operator_name(request),
        "take_flash": lambda: request.session.pop("flash", None),
        "path": request.url.path,
    }


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    engine: Jinja2Templates = request.app.state.templates
    return engine.TemplateResponse(request, name, context, status_code=status)


def flash(request: Request, text: str) -> None:
    request.session["flash"] = text
