"""End-to-end harness: real worker processes (Dramatiq CLI), real PostgreSQL and Redis,
the real gemini provider (google-genai SDK) talking HTTP to the emulator.

One database, Redis namespace, emulator and worker per test module; tests use their
own users, entries and a unique marker in the situation text, so emulator faults and
call counts apply to one test only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text

from db.engine import make_engine
from domain.messages import EntryCreated, MessageV1
from tests.conftest import RUN_ID, DatabaseFactory
from workers.devtools.emulator import EmulatorServer, EmulatorState, start_in_thread
from workers.messaging.redis_keys import queue_keys

API_KEY = "e2e-secret-key-" + uuid.uuid4().hex[:12]


@dataclass
class Harness:
    db_url: str
    redis_url: str
    namespace: str
    emulator: EmulatorServer
    media_dir: Path
    log_path: Path
    engine: Engine
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Where the worker's code is imported from (default: this checkout); a test can point
    # it at another checkout to measure that code's behaviour.
    source_dir: Path | None = None

    # --- processes ------------------------------------------------------------------

    def start_worker(
        self,
        threads: int = 8,
        extra_modules: Sequence[str] = (),
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """A worker process (Dramatiq's CLI, one process); ``extra_modules`` are loaded
        after the worker module, as Dramatiq loads any module named on its command line."""
        ready_before = self.log_path.read_text(errors="replace").count("Worker process is ready")
        env = {**self.env, **(extra_env or {})}
        if self.source_dir is not None:
            env["PYTHONPATH"] = str(self.source_dir)
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dramatiq",
                    "workers.entrypoints.worker",
                    *extra_modules,
                    "--processes",
                    "1",
                    "--threads",
                    str(threads),
                    "--skip-logging",
                ],
                env=env,
                cwd=self.source_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its forked workers die with it (stop_worker)
            )
        self.workers.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            log_text = self.log_path.read_text(errors="replace")
            if log_text.count("Worker process is ready") > ready_before:
                return proc
            assert proc.poll() is None, self.log_path.read_text()[-3000:]
            time.sleep(0.1)
        raise AssertionError("worker did not start")

    def stop_worker(self, proc: subprocess.Popen[bytes]) -> None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        # The whole group: a forked worker still finishing its jobs after the main
        # process gave up would outlive the run (tests/leftovers.py fails it).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.workers.remove(proc)

    def stop_workers(self) -> None:
        for proc in list(self.workers):
            self.stop_worker(proc)

    # --- data -----------------------------------------------------------------------

    def make_entry(
        self, marker: str, emotions: list[str] | None = None, intensity: str = "0.60"
    ) -> tuple[uuid.UUID, uuid.UUID]:
        with self.engine.begin() as conn:
            user_id = conn.execute(
                text(
                    "INSERT INTO users (email, hashed_password, name) VALUES (:e, 'x', 'E2E') RETURNING id"
                ),
                {"e": f"{marker}-{uuid.uuid4().hex[:6]}@example.com"},
            ).scalar_one()
            entry_id = conn.execute(
                text(
                    "INSERT INTO emotion_entries (user_id, situation, emotions, intensity) "
                    "VALUES (:u, :s, CAST(:em AS text[]), :i) RETURNING id"
                ),
                {
                    "u": user_id,
                    "s": f"Situation {marker}: a long day at work",
                    "em": emotions or ["anxiety", "joy"],
                    "i": intensity,
                },
            ).scalar_one()
        return entry_id, user_id

    def statuses(self, marker: str) -> dict[str, int]:
        """Rows by status of the entries whose situation holds ``marker``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT v.status, count(*) FROM visualizations v "
                    "JOIN emotion_entries e ON e.id = v.entry_id "
                    "WHERE e.situation LIKE :m GROUP BY v.status"
                ),
                {"m": f"%{marker}%"},
            )
            return {status: int(n) for status, n in rows}

    def visualization(self, entry_id: uuid.UUID) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    text("SELECT * FROM visualizations WHERE entry_id = :e"), {"e": entry_id}
                )
                .mappings()
                .one_or_none()
            )
        return dict(row) if row else None

    def wait_for(
        self,
        entry_id: uuid.UUID,
        statuses: tuple[str, ...] = ("completed", "failed"),
        timeout: float = 30,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.visualization(entry_id)
            if row and row["status"] in statuses:
                return row
            time.sleep(0.1)
        raise AssertionError(
            f"entry {entry_id} not in {statuses}: {self.visualization(entry_id)}"
            f"\n{self.log_path.read_text(errors='replace')[-3000:]}"
        )

    # --- broker ---------------------------------------------------------------------

    @functools.cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def publish_raw(
        self, body: bytes | str, queue: str = "visualizations", redis_id: str | None = None
    ) -> str:
        """Write a message exactly as a non-Python producer would (docs/messages.md)."""
        redis_id = redis_id or str(uuid.uuid4())
        keys = queue_keys(self.namespace, queue)
        self.redis.hset(keys.ready_bodies, redis_id, body)
        self.redis.rpush(keys.ready, redis_id)
        return redis_id

    def publish(self, entry_id: uuid.UUID, user_id: uuid.UUID, style: str | None = None) -> str:
        return self.publish_message(EntryCreated(entry_id=entry_id, user_id=user_id, style=style))

    def publish_message(self, message: MessageV1) -> str:
        return self.publish_envelope(message.queue_name, message.actor_name, [message.to_payload()])

    def publish_envelope(self, queue: str, actor: str, args: list[Any]) -> str:
        """The documented envelope (docs/messages.md), written without our producer."""
        redis_id = str(uuid.uuid4())
        envelope = {
            "queue_name": queue,
            "actor_name": actor,
            "args": args,
            "kwargs": {},
            "options": {"redis_message_id": redis_id},
            "message_id": str(uuid.uuid4()),
            "message_timestamp": int(time.time() * 1000),
        }
        self.publish_raw(json.dumps(envelope), queue=queue, redis_id=redis_id)
        return str(envelope["message_id"])

    def dead_letters(self, queue: str = "visualizations") -> list[dict[str, Any]]:
        bodies = self.redis.hvals(queue_keys(self.namespace, queue).dead_bodies)
        return [json.loads(b) for b in bodies]

    # --- emulator -------------------------------------------------------------------

    def fault(self, **fault: Any) -> None:
        _post(f"{self.emulator.url}/_emulator/faults", {"faults": [fault]})

    def calls(self, marker: str) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.emulator.url}/_emulator/stats?contains={marker}") as r:
            return dict(json.loads(r.read())["counts"])

    def call_times(self, marker: str, kind: str) -> list[float]:
        with self.emulator.state.lock:
            return [
                c["at"]
                for c in self.emulator.state.calls
                if c["kind"] == kind and marker in c["text"]
            ]


def _post(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    with urllib.request.urlopen(request) as response:
        response.read()


@contextlib.contextmanager
def running_harness(
    database_factory: DatabaseFactory,
    redis_server_url: str,
    folder: Path,
    *,
    env: dict[str, str] | None = None,
    start: bool = True,
    threads: int = 8,
) -> Iterator[Harness]:
    """A database, Redis namespace, emulator and (with ``start``) one worker; ``env``
    overrides the worker's settings. Everything is removed afterwards."""
    name, db_url = database_factory.create()
    namespace = f"evt:{RUN_ID}:e2e:{uuid.uuid4().hex[:6]}"
    emulator = start_in_thread(EmulatorState(api_key=API_KEY))
    worker_env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_server_url,
        "REDIS_NAMESPACE": namespace,
        "PROVIDER": "gemini",
        "GEMINI_API_KEY": API_KEY,
        "GEMINI_BASE_URL": emulator.url,
        "MEDIA_DIR": str(folder / "media"),
        "MEDIA_BASE_URL": "http://media.test/m",
        "MAX_RETRIES": "3",
        "MIN_BACKOFF_MS": "100",
        "MAX_BACKOFF_MS": "400",
        "LEASE_S": "20",
        "REQUEST_TIMEOUT_S": "2",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "DB_POOL_SIZE": "4",
        "INTAKE_MAX_STEPS": "3",
        "INTAKE_MAX_RETRIES": "3",
        "INTAKE_MIN_BACKOFF_MS": "100",
        "INTAKE_MAX_BACKOFF_MS": "300",
        "METRICS_PORT": "0",  # off, unless a test turns it on for its own worker
        **(env or {}),
    }
    engine = make_engine(db_url, pool_size=2)
    h = Harness(
        db_url,
        redis_server_url,
        namespace,
        emulator,
        folder / "media",
        folder / "worker.log",
        engine,
        worker_env,
    )
    h.log_path.touch()
    try:
        if start:
            h.start_worker(threads)
        yield h
    finally:
        h.stop_workers()
        emulator.shutdown()
        engine.dispose()
        client = h.redis
        keys = list(client.scan_iter(match=f"{namespace}*"))
        if keys:
            client.delete(*keys)
        client.close()
        emulator.server_close()
        database_factory.drop(name)


@pytest.fixture(scope="module")
def harness(
    database_factory: DatabaseFactory,
    redis_server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Harness]:
    with running_harness(database_factory, redis_server_url, tmp_path_factory.mktemp("e2e")) as h:
        yield h
