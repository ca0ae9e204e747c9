"""``emotionviz console``: the operator console, web pages over the same data as
``status``, ``job`` and ``dlq`` (workers/operations/). The CLI lists this module among
the rooms that add commands (workers/command_rooms.py), so it starts the console
without importing this package; the web stack loads only when the command runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI builds its parser from register() below: nothing heavy here
    from workers.settings import Settings


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value[:20]!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {port}")
    return port


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    from workers.console.server import serve  # the web stack only for this command

    serve(settings, args.host or settings.console_host, _or(args.port, settings.console_port), _say)
    return 0


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "console",
        cmd_console,
        "web console: queues, workers, failures, dead letters, jobs, analytics (needs a token)",
    )
    p.add_argument("--host", help="address to listen on (default CONSOLE_HOST, 127.0.0.1)")
    p.add_argument(
        "--port", type=_port, help="port (default CONSOLE_PORT, 8088; 0 picks a free one)"
    )
