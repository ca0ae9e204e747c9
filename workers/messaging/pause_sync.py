"""Each worker process compares the paused queues' mirror in Redis with PostgreSQL
every few seconds and rewrites it when they differ (workers/operations/pauses.py:
``sync_mirror``). The fetch repairs only a mirror that is missing; a mirror present but
stale (a replica promoted by Sentinel without the last write, Redis restarted from an
older snapshot) would otherwise run a queue PostgreSQL and ``status`` say is paused, or
hold one they say runs, until the next pause or resume. A Redis failover this process
sees triggers a look at once (workers/messaging/failover.py: ``on_failover``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import redis
from dramatiq.middleware import Middleware

from domain.errors import EmotionVizError
from workers.logging import get_logger
from workers.messaging import failover

log = get_logger("emotionviz.pauses")


class PauseSync(Middleware):
    """A thread per worker process, from its boot to its shutdown."""

    def __init__(self, sync: Callable[[], object], every_s: float) -> None:
        self.sync = sync
        self.every_s = every_s
        self._stop = threading.Event()
        self._now = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self._stop.clear()
        failover.on_failover(self.look_now)
        self._thread = threading.Thread(target=self._run, name="pause-sync", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._stop.set()
        self._now.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def look_now(self, _seen: object = None) -> None:
        """Compare at once (a failover: the new primary may hold an older mirror)."""
        self._now.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._now.wait(self.every_s)
            self._now.clear()
            if self._stop.is_set():
                return
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - the next look tries again
                log.warning(
                    "paused queues' mirror not compared with the database; retrying",
                    reason=f"{type(exc).__name__}: {str(exc)[:200]}",
                )


def restore_mirror(pause_source: Callable[[], object] | None) -> bool:
    """Rebuild the paused queues' mirror from PostgreSQL (both brokers, when a fetch finds
    it missing); False (logged) when it could not: the consumers then take nothing."""
    if pause_source is None:
        return False
    try:
        pause_source()
    except (EmotionVizError, redis.RedisError) as exc:
        log.warning(
            "paused queues not restored from the database; retrying",
            reason=f"{type(exc).__name__}: {str(exc)[:200]}",
        )
        return False
    return True
