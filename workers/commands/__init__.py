"""Subcommands added by the pipeline, intake and analytics work (kept out of cli.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def register(add: Callable[..., Any]) -> None:
    from workers.commands import analytics, demo, ops

    ops.register(add)
    analytics.register(add)
    demo.register(add)
