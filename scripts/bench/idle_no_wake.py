"""Loaded by scripts/bench_idle.py into its 'before' workers, after the worker module:
consumers sleep their backoff as Dramatiq's do (no wake-ups), as before they existed."""

from __future__ import annotations

import dramatiq

import workers.entrypoints.worker  # noqa: F401 - the broker and actors, as in production

dramatiq.get_broker().wake_ups_enabled = False
