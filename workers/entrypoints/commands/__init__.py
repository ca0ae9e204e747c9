"""The CLI's subcommands, one module per concern; cli.py holds the parser and the
set-up commands (services, migrate, seed, backup, restore); other rooms' commands
(console, devtools) come through workers/command_rooms.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def register_all(add: Callable[..., Any]) -> None:
    from workers.command_rooms import register_elsewhere
    from workers.entrypoints.commands import (
        analytics,
        dlq,
        doctor,
        health,
        jobs,
        media,
        status,
        worker,
    )

    for module in (worker, jobs, status, dlq, analytics, media, health, doctor):
        module.register(add)
    register_elsewhere(add)  # the console's and the devtools' (workers/command_rooms.py)
