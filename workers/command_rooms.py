"""The rooms besides workers/entrypoints/ that add ``emotionviz`` subcommands: the
console (console/command.py) and the development tools (devtools/commands.py), each a
module with ``register(add)`` that imports its heavy parts only when its command runs.

The CLI (entrypoints/commands/register_all) asks this list, so it starts the console
without importing workers/console/, and the console imports nothing of the CLI: the
one seam between the two rooms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def register_elsewhere(add: Callable[..., Any]) -> None:
    from workers.console import command as console
    from workers.devtools import commands as devtools

    for module in (console, devtools):
        module.register(add)
