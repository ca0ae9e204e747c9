"""A deployment cannot run the placeholder providers by accident, on real worker
processes (Dramatiq's CLI loading workers.entrypoints.worker, as a supervisor or a
container would), real PostgreSQL and Redis:

- PROVIDER=gemini without GEMINI_API_KEY: the worker exits 2 with one readable line per
  process, beside Dramatiq's own line about the exit (it used to start, log a warning
  per warm-up step, and take messages it could only fail); ``emotionviz worker``
  refused it already, before starting Dramatiq (tests/integration/test_cli_contract.py);
- PROVIDER=auto without a key: one warning line per process saying why and what to set,
  and ``emotionviz_provider_info{resolved_from="auto",analysis="local",image="local"}``
  on /metrics (nothing at all before); PROVIDER=local, named on purpose, is quiet;
- every visualization row names the provider and model that made it, in both raw dumps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.messages import EntryCreated
from tests.integration.helpers import insert_entry, insert_user
from workers.devtools.emulator import EmulatorState, start_in_thread
from workers.providers.factory import build_providers
from workers.services.visualize import VisualizationService, VisualizeLimits
from workers.settings import Settings

pytestmark = pytest.mark.integration

BOOT_TIMEOUT_S = 60
KEY_LINE = (
    "emotionviz worker: PROVIDER=gemini needs GEMINI_API_KEY "
    "(or PROVIDER=local for the offline providers)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker_env(
    db_url: str, redis_url: str, namespace: str, folder: Path, **settings: str
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PROVIDER", "GEMINI_API_KEY", "PROMETHEUS_MULTIPROC_DIR")
    }
    (folder / "metrics").mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "REDIS_NAMESPACE": namespace,
            "MEDIA_DIR": str(folder / "media"),
            "DATA_DIR": str(folder / "data"),
            "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
            "METRICS_HOST": "127.0.0.1",
            "METRICS_PORT": "0",
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(Path.cwd()),
            **settings,
        }
    )
    return env


def _dramatiq(processes: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dramatiq",
        "workers.entrypoints.worker",
        "--processes",
        str(processes),
        "--threads",
        "1",
        "--skip-logging",
    ]


def test_a_gemini_worker_without_a_key_exits_2_with_one_line(
    db_url: str, redis_server_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    env = _worker_env(
        db_url, redis_server_url, redis_namespace, tmp_path, PROVIDER="gemini", GEMINI_API_KEY=""
    )
    started = time.monotonic()
    # Its own process group: a worker that does start (the old code) is stopped whole.
    proc = subprocess.Popen(
        _dramatiq(1),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=BOOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"the worker started without a key: {stderr[-600:]}")
    assert proc.returncode == 2, stderr
    assert time.monotonic() - started < 30
    lines = stderr.strip().splitlines()
    ours = [line for line in lines if line.startswith("emotionviz worker:")]
    assert ours == [KEY_LINE], stderr  # one line per process, no traceback
    others = [line for line in lines if line not in ours]
    assert all("exited unexpectedly (code 2)" in line for line in others), stderr
    assert "Traceback" not in stderr and stdout == ""


@pytest.fixture
def started_worker(
    db_url: str, redis_server_url: str, redis_namespace: str, tmp_path: Path
) -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def start(**settings: str) -> tuple[subprocess.Popen[str], int]:
        port = _free_port()
        env = _worker_env(
            db_url,
            redis_server_url,
            redis_namespace,
            tmp_path / uuid.uuid4().hex[:6],
            METRICS_PORT=str(port),
            **settings,
        )
        proc = subprocess.Popen(
            _dramatiq(1),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        procs.append(proc)
        return proc, port

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # whatever of its group is left
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def _provider_series(port: int) -> list[str]:
    """The emotionviz_provider_info samples on /metrics, waiting for the worker process
    to set them (the metrics server may answer before it has loaded); [] if never."""
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                body = r.read().decode()
        except OSError:
            body = ""
        series = [s for s in body.splitlines() if s.startswith("emotionviz_provider_info{")]
        if series:
            return series
        time.sleep(0.5)
    return []


def _stop(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    lines = []
    for line in stderr.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"event": line})
    return lines


@pytest.mark.parametrize(
    ("settings", "series", "warns"),
    [
        (
            {"PROVIDER": "auto"},
            'emotionviz_provider_info{analysis="local",image="local",resolved_from="auto"} 1.0',
            True,
        ),
        (
            {"PROVIDER": "local"},
            'emotionviz_provider_info{analysis="local",image="local",resolved_from="setting"} 1.0',
            False,
        ),
    ],
    ids=["auto-without-key", "local-on-purpose"],
)
def test_the_providers_a_worker_runs_are_a_metric_and_auto_to_local_is_loud(
    started_worker: Any, settings: dict[str, str], series: str, warns: bool
) -> None:
    proc, port = started_worker(**settings)
    assert _provider_series(port) == [series]
    lines = _stop(proc)
    warnings = [line for line in lines if line.get("event") == "placeholder providers in use"]
    if not warns:
        assert warnings == []
        return
    assert len(warnings) == 1, lines  # one process, one line
    (warning,) = warnings
    assert warning["level"] == "warning"
    assert warning["reason"].startswith("PROVIDER=auto and no GEMINI_API_KEY: running the ")
    assert "set PROVIDER=gemini and GEMINI_API_KEY" in warning["reason"]
    assert "PROVIDER=local" in warning["reason"]


@pytest.mark.parametrize("provider", ["local", "gemini"])
def test_every_row_names_the_provider_and_model_that_made_it(
    provider: str,
    engine: Engine,
    redis_server_url: str,
    redis_namespace: str,
    tmp_path: Path,
) -> None:
    emulator = (
        start_in_thread(EmulatorState(api_key="provider-test-key"))
        if provider == "gemini"
        else None
    )
    try:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            provider=provider,
            gemini_api_key="provider-test-key" if provider == "gemini" else None,
            gemini_base_url=emulator.url if emulator else None,
            media_dir=tmp_path,
            redis_namespace=redis_namespace,
        )
        client = redis.Redis.from_url(redis_server_url)
        providers = build_providers(settings, client)
        factory = make_session_factory(engine)
        service = VisualizationService(
            lambda: UnitOfWork(factory),
            providers,
            VisualizeLimits(
                lease_s=60, thumbnail_px=64, max_image_bytes=10**7, max_image_pixels=10**7
            ),
        )
        with engine.begin() as conn:
            user_id = insert_user(conn)
            entry_id = insert_entry(conn, user_id)
        service.process(EntryCreated(entry_id=entry_id, user_id=user_id))
        client.close()
    finally:
        if emulator is not None:
            emulator.shutdown()
            emulator.server_close()
    with engine.connect() as conn:
        status, analysis, image = conn.execute(
            text(
                "SELECT status, gemini_analysis, nanobanana_response FROM visualizations "
                "WHERE entry_id = :e"
            ),
            {"e": entry_id},
        ).one()
    assert status == "completed"
    expected = {
        "local": (("local", "local-rules-v1"), ("local", "local-pillow-v1")),
        "gemini": (
            ("gemini", settings.analysis_model),
            ("gemini", settings.image_model),
        ),
    }[provider]
    assert (analysis["provider"], analysis["model"]) == expected[0]
    assert (image["provider"], image["model"]) == expected[1]
