"""Serve the console: resolve the token, bind the socket (so a taken port is one line),
print where to sign in, run uvicorn until Ctrl-C or SIGTERM."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn

from domain.errors import EmotionVizError
from workers import bootstrap
from workers.console.app import build_app
from workers.console.security import resolve_auth
from workers.logging import register_secret
from workers.settings import Settings


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise EmotionVizError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, host: str, port: int, say: Callable[[str], None]) -> None:
    auth = resolve_auth(settings, host)  # before anything starts: a refusal is one line
    register_secret(auth.token)
    sock = bind(host, port)
    # The embedded PostgreSQL and Redis (when no URLs are set) start now, not at the
    # first page.
    bootstrap.database_url(settings)
    bootstrap.redis_url(settings)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/"
    say(f"console listening on {url}")
    if auth.generated:
        say(f"sign in: {url}login#token={auth.token}")
        say("(a token for this run only; set CONSOLE_TOKEN to keep one across restarts)")
    config = uvicorn.Config(
        build_app(settings, auth),
        log_config=None,  # our logging (structlog, secrets scrubbed) is already set up
        access_log=False,  # the overview polls every few seconds; actions log themselves
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[sock])
