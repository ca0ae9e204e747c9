"""Long-running commands stop cleanly on SIGTERM, also as PID 1 (a container without
an init), where the kernel drops a signal that has no handler; a worker stopped mid-run
(a rollout, a scale-down, a node drain) loses nothing within the manifests' grace."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from tests.conftest import DatabaseFactory
from tests.e2e.conftest import Harness, running_harness

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _pid_namespaces_work() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = [unshare, "--pid", "--fork", "--kill-child", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@pytest.fixture
def scheduler_env(redis_server_url: str) -> Iterator[dict[str, str]]:
    namespace = f"evt:sig:{uuid.uuid4().hex[:8]}"
    yield {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "REDIS_URL": redis_server_url,
        "REDIS_NAMESPACE": namespace,
        "LOG_FORMAT": "json",
    }
    client = redis.Redis.from_url(redis_server_url)
    keys = list(client.scan_iter(match=f"{namespace}*"))
    if keys:
        client.delete(*keys)


def _start(prefix: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "workers.entrypoints.cli", "scheduler"],
        env=env,
        cwd=REPO_ROOT / "tests",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_scheduled(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once the jobs are registered
    assert line.startswith("scheduled "), line + (proc.stderr.read() if proc.stderr else "")


def _stop(proc: subprocess.Popen[str], pid: int) -> tuple[int, float, str]:
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the scheduler ignored SIGTERM") from None
    return proc.returncode, time.monotonic() - started, out


def test_scheduler_exits_promptly_and_cleanly_on_sigterm(scheduler_env: dict[str, str]) -> None:
    proc = _start([], scheduler_env)
    _wait_scheduled(proc)
    code, seconds, out = _stop(proc, proc.pid)
    assert code == 0 and "scheduler stopped" in out
    assert seconds < 3


@pytest.mark.skipif(not _pid_namespaces_work(), reason="needs PID namespaces (unshare)")
def test_scheduler_as_pid_1_exits_on_sigterm(scheduler_env: dict[str, str]) -> None:
    unshare = str(shutil.which("unshare"))
    proc = _start([unshare, "--pid", "--fork", "--kill-child"], scheduler_env)
    _wait_scheduled(proc)
    # The scheduler is unshare's only child, and PID 1 of its namespace.
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    code, seconds, out = _stop(proc, int(children[0]))
    assert code == 0 and "scheduler stopped" in out
    assert seconds < 3


# --- a worker pod stopped by a rollout ------------------------------------------------


def _grace_s() -> int:
    """The visualization workers' terminationGracePeriodSeconds in deploy/kubernetes."""
    from tests.deploy.test_kubernetes import render

    (deployment,) = [
        o
        for o in render("base")
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "emotionviz-worker-visualizations"
    ]
    return int(deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def _rows_per_entry(harness: Harness, marker: str) -> set[int]:
    with harness.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT count(v.id) FROM emotion_entries e "
                "LEFT JOIN visualizations v ON v.entry_id = e.id "
                "WHERE e.situation LIKE :m GROUP BY e.id"
            ),
            {"m": f"%{marker}%"},
        )
        return {int(n) for (n,) in rows}


def _pod_worker(harness: Harness, log: Path, prefix: list[str]) -> subprocess.Popen[bytes]:
    """`emotionviz worker` as the visualization Deployment runs it (its arguments; one
    process), with ``prefix`` (unshare: PID 1 of its own namespace, as in a pod)."""
    env = {**harness.env, "PYTHONPATH": str(REPO_ROOT), "WORKER_PROCESSES": "1"}
    argv = [sys.executable, "-m", "workers.entrypoints.cli", "worker", "--queues"]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*prefix, *argv, "visualizations", "--threads", "8"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_worker_stopped_mid_run_loses_nothing(
    database_factory: DatabaseFactory, redis_server_url: str, tmp_path: Path
) -> None:
    """What a rollout, a scale-down or a node drain does to a worker pod: SIGTERM while it
    runs jobs and holds prefetched ones, then a new pod. Within the manifests' grace the
    worker exits; every entry completes once, with one call of each model per entry."""
    grace_s = _grace_s()
    in_pid_1 = _pid_namespaces_work()
    unshare = [str(shutil.which("unshare")), "--pid", "--fork", "--kill-child"]
    log = tmp_path / "pod.log"
    marker = "r" + uuid.uuid4().hex[:8]
    with running_harness(database_factory, redis_server_url, tmp_path, start=False) as harness:
        harness.emulator.state.latency_analysis_s = 0.5
        harness.emulator.state.latency_image_s = 1.0  # REQUEST_TIMEOUT_S is 2
        entries = [harness.make_entry(f"{marker}-{i}") for i in range(40)]
        for entry_id, user_id in entries:
            harness.publish(entry_id, user_id)
        pod = _pod_worker(harness, log, unshare if in_pid_1 else [])
        second: subprocess.Popen[bytes] | None = None
        try:
            deadline = time.monotonic() + 60
            while harness.statuses(marker).get("processing", 0) < 8:  # all threads busy
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                assert pod.poll() is None, log.read_text()[-3000:]
                time.sleep(0.1)
            target = pod.pid
            if in_pid_1:  # the kubelet signals the container's PID 1, not unshare
                target = int(
                    Path(f"/proc/{pod.pid}/task/{pod.pid}/children").read_text().split()[0]
                )
            stopped = time.monotonic()
            os.kill(target, signal.SIGTERM)
            try:
                pod.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running {grace_s} s after SIGTERM: the kubelet would kill it")
            took = time.monotonic() - stopped
            before = harness.statuses(marker)
            assert before.get("processing", 0) == 0, before  # finished, none abandoned
            assert before.get("completed", 0) < len(entries), "stopped too late to tell"

            second = _pod_worker(harness, log, [])  # the replacement pod
            deadline = time.monotonic() + 120
            while harness.statuses(marker).get("completed", 0) < len(entries):
                assert time.monotonic() < deadline, (
                    f"{harness.statuses(marker)}\n{log.read_text()[-3000:]}"
                )
                assert second.poll() is None, log.read_text()[-3000:]
                time.sleep(0.2)
            lost = len(entries) - harness.statuses(marker).get("completed", 0)
            duplicated = sum(n - 1 for n in _rows_per_entry(harness, marker) if n > 1)
            calls = harness.calls(marker)
            extra_paid = calls.get("analysis", 0) + calls.get("image", 0) - 2 * len(entries)
            print(
                f"SIGTERM after {before.get('completed', 0)} of {len(entries)} completed; "
                f"exited in {took:.1f} s (grace {grace_s} s, PID 1: {in_pid_1}); "
                f"lost {lost}, duplicated {duplicated}, extra paid calls {extra_paid}"
            )
            assert (lost, duplicated, extra_paid) == (0, 0, 0), calls
            assert _rows_per_entry(harness, marker) == {1}
        finally:
            for proc in (pod, second):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=grace_s)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
