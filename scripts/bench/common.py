"""Shared plumbing for the benchmark scripts: a throw-away database on the configured
(or embedded) server, worker processes, the emulator process, RSS sampling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import psutil
import psycopg
import redis
from sqlalchemy.engine import make_url

from db import migrate
from workers import bootstrap
from workers.messaging import redis_keys
from workers.messaging.broker_state import pending_messages
from workers.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench-output"


def base_env(db_url: str, namespace: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": bootstrap.redis_url(get_settings()),
        "REDIS_NAMESPACE": namespace,
        "MEDIA_DIR": str(OUT / "media"),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
        "ANALYSIS_RPM": "1000000",
        "IMAGE_RPM": "1000000",
        "ANALYSIS_MAX_CONCURRENT": "1000",
        "IMAGE_MAX_CONCURRENT": "1000",
        "DB_POOL_SIZE": "20",
    }


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def bench_database() -> Iterator[str]:
    """A freshly migrated database next to the configured one, dropped afterwards."""
    base = bootstrap.database_url(get_settings())
    name = f"emotionviz_bench_{os.getpid()}"
    admin = make_url(base).set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(libpq(admin), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    try:
        yield url
    finally:
        with psycopg.connect(libpq(admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_entries(db_url: str, count: int, users: int = 50) -> None:
    with psycopg.connect(libpq(db_url), autocommit=True) as conn:
        conn.execute("TRUNCATE users CASCADE")
        conn.execute(
            "INSERT INTO users (email, hashed_password, name) "
            "SELECT 'bench' || g || '@example.com', 'x', 'Bench ' || g FROM generate_series(1, %s) g",
            (users,),
        )
        conn.execute(
            """
            INSERT INTO emotion_entries (user_id, situation, emotions, intensity, created_at)
            SELECT u.id, 'Benchmark situation number ' || g,
                   ARRAY[(ARRAY['joy','sadness','anger','fear','anxiety','contentment'])[1 + g %% 6]],
                   round((g %% 100) / 100.0, 2), now() - (g %% 60) * interval '1 day'
            FROM generate_series(1, %s) g
            JOIN LATERAL (SELECT id FROM users ORDER BY id OFFSET (g %% %s) LIMIT 1) u ON true
            """,
            (count, users),
        )


def entry_ids(db_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(libpq(db_url)) as conn:
        return [
            (str(a), str(b)) for a, b in conn.execute("SELECT id, user_id FROM emotion_entries")
        ]


def status_counts(db_url: str) -> dict[str, int]:
    with psycopg.connect(libpq(db_url)) as conn:
        return dict(
            conn.execute("SELECT status, count(*) FROM visualizations GROUP BY 1").fetchall()
        )


_GEVENT_DRAMATIQ = (
    "from gevent import monkey; monkey.patch_all(); "
    "import sys; from dramatiq.__main__ import main; sys.exit(main())"
)


class Workers:
    """``processes`` x ``threads`` Dramatiq worker processes, as `emotionviz worker` runs them."""

    def __init__(
        self,
        env: dict[str, str],
        processes: int,
        threads: int,
        queues: Sequence[str],
        *,
        gevent: bool = False,
        modules: Sequence[str] = ("noop_actors",),
        log_prefix: str = "worker",
        root: Path = ROOT,
    ) -> None:
        """``root``: the checkout whose code the workers run (scripts/bench_ab.py)."""
        # What `emotionviz worker` tells its processes (WORKER_CPU_AFFINITY shares the
        # CPUs among WORKER_PROCESSES).
        env = {**env, "WORKER_PROCESSES": str(processes), "WORKER_THREADS": str(threads)}
        self.env, self.processes = env, processes
        self.log_path = OUT / f"{log_prefix}-{uuid.uuid4().hex[:6]}.log"
        self.log = self.log_path.open("wb")
        # Dramatiq's gevent worker is its CLI after gevent's monkey-patching.
        launcher = ["-c", _GEVENT_DRAMATIQ] if gevent else ["-m", "dramatiq"]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *launcher,
                "workers.entrypoints.worker",
                *modules,
                "--path",
                str(root / "scripts" / "bench"),
                "--processes",
                str(processes),
                "--threads",
                str(threads),
                "--skip-logging",
                "--queues",
                *queues,
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
        client = redis.Redis.from_url(env["REDIS_URL"])
        heartbeats = redis_keys.heartbeats(env["REDIS_NAMESPACE"])
        deadline = time.monotonic() + 60
        while client.zcard(heartbeats) < processes:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"workers did not start; see {self.log_path}")
            time.sleep(0.1)
        client.close()

    def children_rss_mb(self) -> float:
        kids = psutil.Process(self.proc.pid).children(recursive=True)
        return sum(k.memory_info().rss for k in kids) / 2**20

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        # The run's namespace (queues, heartbeats, rate-limit keys) goes with it.
        client = redis.Redis.from_url(self.env["REDIS_URL"])
        keys = list(client.scan_iter(match=f"{self.env['REDIS_NAMESPACE']}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    """User + system CPU seconds of ``processes`` so far (the ones gone count 0)."""
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def server_processes(name: str) -> list[psutil.Process]:
    """This machine's processes named ``name`` (postgres, redis-server)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if name in (proc.info["name"] or ""):
            found.append(proc)
    return found


class Emulator:
    def __init__(self, analysis_s: float, image_s: float, port: int = 0) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.entrypoints.cli",
                "emulator",
                "--port",
                str(self.port),
                "--api-key",
                "bench-key",
                "--analysis-latency",
                str(analysis_s),
                "--image-latency",
                str(image_s),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/_emulator/stats") as r:
            return dict(json.loads(r.read())["counts"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    """One client (and connection pool) per URL for the whole run: the publishing loops
    must not pay a connection each message."""
    return redis.Redis.from_url(url)


def publish_raw(
    redis_url: str, namespace: str, queue: str, actor: str, payloads: list[dict[str, object]]
) -> None:
    """The documented envelope, pipelined (what Producer.publish_many writes)."""
    client = _redis(redis_url)
    with client.pipeline(transaction=False) as pipe:
        for payload in payloads:
            rid = str(uuid.uuid4())
            pipe.hset(
                redis_keys.queue_keys(namespace, queue).ready_bodies,
                rid,
                json.dumps(
                    {
                        "queue_name": queue,
                        "actor_name": actor,
                        "args": [payload],
                        "kwargs": {},
                        "options": {"redis_message_id": rid},
                        "message_id": str(uuid.uuid4()),
                        "message_timestamp": int(time.time() * 1000),
                    }
                ),
            )
            pipe.rpush(redis_keys.queue_keys(namespace, queue).ready, rid)
        pipe.execute()


def wait_drained(redis_url: str, namespace: str, queue: str, timeout: float = 900) -> None:
    """Until every message of the queue is acked (Dramatiq deletes acked bodies)."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while pending_messages(client, namespace, queue):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{queue} did not drain in {timeout}s")
        time.sleep(0.02)
    client.close()


def visualize_and_wait(env: dict[str, str], ids: list[tuple[str, str]]) -> None:
    """Publish an entry.created for each (entry id, user id) and wait until the queue
    has drained."""
    publish_raw(
        env["REDIS_URL"],
        env["REDIS_NAMESPACE"],
        "visualizations",
        "entry.created",
        [{"version": 1, "entry_id": e, "user_id": u} for e, u in ids],
    )
    wait_drained(env["REDIS_URL"], env["REDIS_NAMESPACE"], "visualizations")
