"""The metrics server of one ``emotionviz worker``: a process of its own (Dramatiq's
CLI forks it, as for its own Prometheus middleware) on ``METRICS_HOST:METRICS_PORT``.

- ``/metrics``: Prometheus text format: Dramatiq's ``dramatiq_*`` and our
  ``emotionviz_*`` metrics from every worker process (multiprocess files), plus the
  gauges read from Redis and PostgreSQL (collector.py, cached);
- ``/healthz``: 200 while every worker process reports all its threads alive, else 503;
- ``/readyz``: 200 when the database (schema at head) and the broker answer, else 503.
"""

from __future__ import annotations

import json
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from workers.logging import get_logger

log = get_logger("emotionviz.metrics")


@lru_cache(maxsize=1)
def _state_collector() -> Any:
    from workers.observability import snapshot
    from workers.observability.collector import StateCollector

    # The process's shared snapshot (status and the console read the same one).
    return StateCollector(snapshot.shared().get)


@lru_cache(maxsize=1)
def _pause_collector() -> Any:
    from workers.observability.pauses import PauseCollector

    return PauseCollector()


def render_metrics() -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from workers.observability.health import metrics_dir
    from workers.settings import get_settings

    registry = CollectorRegistry()
    directory = metrics_dir(get_settings().metrics_port)
    if directory.is_dir():
        MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    registry.register(_state_collector())
    registry.register(_pause_collector())  # paused queues (issue 24.3)
    return bytes(generate_latest(registry))


def health() -> tuple[int, dict[str, Any]]:
    from workers.observability.health import metrics_dir, read_health
    from workers.settings import get_settings

    healthy, processes = read_health(metrics_dir(get_settings().metrics_port))
    return (200 if healthy else 503), {"healthy": healthy, "processes": processes}


def readiness() -> tuple[int, dict[str, Any]]:
    from workers.observability.readiness import run_checks
    from workers.settings import get_settings

    checks = run_checks(get_settings(), timeout_s=3.0)
    ready = all(c.ok for c in checks)
    body = {"ready": ready, "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}}
    return (200 if ready else 503), body


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        try:
            if self.path.split("?")[0] == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST

                self._send(200, render_metrics(), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._send_json(*health())
            elif self.path == "/readyz":
                self._send_json(*readiness())
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")
        except Exception as exc:  # noqa: BLE001 - a failed scrape is a 500, not a dead server
            log.error("metrics request failed", path=self.path, reason=f"{type(exc).__name__}")
            self._send(500, b"internal error\n", "text/plain")

    def _send_json(self, code: int, body: dict[str, Any]) -> None:
        self._send(code, json.dumps(body, default=str).encode(), "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # scrapes every few seconds would drown the worker's log


def serve() -> int:
    """Dramatiq's CLI runs this in a forked process (``Metrics.forks``)."""
    from workers import bootstrap
    from workers.settings import get_settings

    settings = bootstrap.configure_process(get_settings())
    try:
        server = ThreadingHTTPServer((settings.metrics_host, settings.metrics_port), _Handler)
    except OSError as exc:
        log.error(
            "metrics server not started",
            reason=str(exc),
            port=settings.metrics_port,
            hint="another process holds METRICS_PORT; set another port, or 0 to turn it off",
        )
        return 1
    log.info("metrics server listening", host=settings.metrics_host, port=settings.metrics_port)
    server.daemon_threads = True
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
