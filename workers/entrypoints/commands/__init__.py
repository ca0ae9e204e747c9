"""The CLI's subcommands, one module per concern; cli.py holds the parser and the
set-up commands (services, migrate, seed, backup, restore)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def register_all(add: Callable[..., Any]) -> None:
    from workers.devtools import commands as devtools
    from workers.entrypoints.commands import (
        analytics,
        console,
        dlq,
        doctor,
        health,
        jobs,
        media,
        status,
        worker,
    )

    for module in (worker, jobs, status, dlq, analytics, media, health, doctor, console):
        module.register(add)
    devtools.register(add)
