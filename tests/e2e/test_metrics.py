"""/metrics, /healthz and /readyz of a real worker (Dramatiq's CLI forks the metrics
server) while it works through real messages against the emulator."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Harness

pytestmark = [pytest.mark.e2e]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:
        return 0, b""  # not listening (yet)


def _samples(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric in Prometheus text format."""
    found: dict[str, float] = {}
    for match in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE):
        found[match.group(1) or ""] = float(match.group(2))
    return found


def _metric(base: str, name: str, **labels: str) -> float:
    _, body = _get(f"{base}/metrics")
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        value
        for key, value in _samples(body.decode(), name).items()
        if all(label in key for label in wanted)
    )


def _wait(predicate: Any, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_metrics_follow_the_queue_and_count_provider_errors(
    harness: Harness, tmp_path: Path
) -> None:
    harness.stop_workers()  # only the worker below consumes
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    marker = "m" + uuid.uuid4().hex[:8]
    harness.fault(kind="503", target="image", contains=marker, times=1)
    entries = [harness.make_entry(f"{marker}-{i}") for i in range(12)]
    for entry_id, user_id in entries:
        harness.publish(entry_id, user_id)
    # The queue drains over ~6 s (12 entries, 2 threads): still waiting when /readyz
    # first answers, even on a loaded machine (at 0.3 s it had drained once, in a
    # full run).
    harness.emulator.state.latency_image_s = 1.0

    worker = harness.start_worker(
        threads=2,
        extra_env={
            "METRICS_PORT": str(port),
            "METRICS_CACHE_S": "0",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
            "dramatiq_prom_db": str(tmp_path / "metrics"),
        },
    )
    try:
        _wait(lambda: _get(f"{base}/readyz")[0] == 200, what="/readyz")
        queued = _metric(base, "emotionviz_queue_messages", queue="visualizations", state="ready")
        assert queued > 0  # published before the worker, still waiting
        for entry_id, _ in entries:
            assert harness.wait_for(entry_id, timeout=60)["status"] == "completed"
        _wait(
            lambda: (
                _metric(base, "emotionviz_queue_messages", queue="visualizations", state="ready")
                == 0
            ),
            what="the queue to drain",
        )
        done = _metric(
            base, "emotionviz_messages_processed_total", actor="entry.created", result="ok"
        )
        assert done >= len(entries)
        assert _metric(base, "emotionviz_provider_errors_total", error_class="server_error") >= 1
        assert _metric(base, "emotionviz_provider_request_seconds_count", outcome="http_503") >= 1
        assert _metric(base, "emotionviz_provider_request_seconds_count", outcome="ok") >= 24
        assert _metric(base, "emotionviz_workers_alive") >= 1
        completed = _metric(
            base, "emotionviz_visualizations_finished_last_hour", status="completed"
        )
        assert completed >= len(entries)
        # Completed work as a counter: each entry's transition once, retries and
        # duplicate deliveries not counted.
        finished = _metric(base, "emotionviz_visualizations_finished_total", status="completed")
        assert finished == len(entries)
        assert _metric(base, "dramatiq_messages_total") >= len(entries)  # Dramatiq's own

        code, body = _get(f"{base}/healthz")
        health = json.loads(body)
        assert code == 200 and health["healthy"], health
        assert all(p["workers_alive"] == 2 for p in health["processes"])
        code, body = _get(f"{base}/readyz")
        assert code == 200 and json.loads(body)["checks"]["database"]["ok"]
    finally:
        harness.emulator.state.latency_image_s = 0.0
        harness.stop_worker(worker)
        harness.start_worker()  # the module's other tests expect the usual worker
