"""Liveness of worker processes, for ``/healthz``.

Each worker process writes ``health-<pid>.json`` into the metrics directory every few
seconds: whether every consumer thread and every worker thread is alive. The metrics
server of the same ``emotionviz worker`` reads them: healthy when at least one process
reported recently and none reported a dead thread. A process that dies stops writing,
so its report goes stale and health fails until the worker is restarted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dramatiq.middleware import Middleware

from workers.logging import get_logger
from workers.messaging.watchdog import ThreadCensus, consumer_label

log = get_logger("emotionviz.health")

REPORT_EVERY_S = 5.0
STALE_AFTER_S = 20.0
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _port_dir(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"emotionviz-metrics-{port}"


def metrics_dir(port: int) -> Path:
    """The directory every process of one ``emotionviz worker`` shares (metrics files
    and health reports): set by the worker command, else derived from the port."""
    configured = os.environ.get(MULTIPROC_ENV)
    return Path(configured) if configured else _port_dir(port)


def prepare_metrics_dir(port: int, env: dict[str, str]) -> Path:
    """A fresh, empty directory for a worker about to start (old processes' counters
    and health reports would lie), exported to the processes through ``env``."""
    path = _port_dir(port)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    env[MULTIPROC_ENV] = str(path)
    env["dramatiq_prom_db"] = str(path)  # Dramatiq's own Prometheus middleware
    return path


@dataclass(frozen=True)
class ThreadCounts:
    consumers_alive: int
    consumers: int
    workers_alive: int
    workers: int

    @property
    def ok(self) -> bool:
        return self.consumers_alive == self.consumers and self.workers_alive == self.workers


def count_threads(consumers: ThreadCensus, workers: ThreadCensus) -> ThreadCounts:
    """Alive threads of a worker process, from the threads Dramatiq announced."""
    consumers_alive, consumers_total = consumers.tally()
    workers_alive, workers_total = workers.tally()
    return ThreadCounts(consumers_alive, consumers_total, workers_alive, workers_total)


class HealthReporter(Middleware):
    """Writes this process's health report while the worker runs. The threads it
    counts are those Dramatiq announces through its public boot hooks (the Worker's
    own lists of them are not documented)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / f"health-{os.getpid()}.json"
        self._stop = threading.Event()
        self.consumers = ThreadCensus()
        self.workers = ThreadCensus()

    def after_consumer_thread_boot(self, broker: Any, thread: threading.Thread) -> None:
        self.consumers.add(consumer_label(thread), thread)

    def after_worker_thread_boot(self, broker: Any, thread: threading.Thread) -> None:
        self.workers.add(thread.name, thread)

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self.path = self.directory / f"health-{os.getpid()}.json"
        thread = threading.Thread(target=self._run, name="health-reporter", daemon=True)
        thread.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _run(self) -> None:
        while not self._stop.is_set():
            counts = count_threads(self.consumers, self.workers)
            report = {"pid": os.getpid(), "at": time.time(), "ok": counts.ok, **counts.__dict__}
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(report))
                tmp.replace(self.path)  # readers never see half a report
            except OSError as exc:
                log.warning("health report not written", reason=str(exc))
            if not counts.ok:
                log.error("worker thread dead", **counts.__dict__)
            self._stop.wait(REPORT_EVERY_S)


def read_health(directory: Path, now: float | None = None) -> tuple[bool, list[dict[str, Any]]]:
    """(healthy, the process reports with a ``problem`` where there is one)."""
    now = now or time.time()
    reports: list[dict[str, Any]] = []
    for path in sorted(directory.glob("health-*.json")):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now; the next read sees it
        if now - float(report.get("at", 0)) > STALE_AFTER_S:
            report["problem"] = f"no report for {now - float(report.get('at', 0)):.0f} s"
        elif not report.get("ok"):
            report["problem"] = "a consumer or worker thread is dead"
        reports.append(report)
    healthy = bool(reports) and not any("problem" in r for r in reports)
    return healthy, reports
