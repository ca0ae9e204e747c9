"""The chaos suite (issue 10): real `emotionviz worker` groups under a supervisor loop, the
real scheduler (reconcile every minute), the Gemini emulator, PostgreSQL and Redis,
through kill -9 x5, a Redis flush, killed database connections, killed Redis client
connections, 30 % transient + 2 % permanent API faults, a poison entry and the hostile
corpus, with no operator. Prints a table; exits 1 on any loss, duplicate, unexpected
failure, found secret, or a disruption not healed within 120 s; 3 on the hard timeout.

    scripts/chaos [--short] [--poison-only] [--entries N] [--database-url URL] [--redis-url URL]

--poison-only: the poison entry beside ordinary ones and nothing else (no API faults,
kills, flush or hostile input): every ordinary entry must complete, and the poison fail
after MAX_CLAIMS crashes (a crash is blamed only on the row that caused it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import psycopg  # noqa: E402
import redis  # noqa: E402
from chaos_parts import poison  # noqa: E402
from chaos_parts.procs import Supervised, Supervisor, client_ports, hard_timeout  # noqa: E402
from chaos_parts.report import Disruption, Outcome, render  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from workers.devtools.emulator import EmulatorState, Fault  # noqa: E402
from workers.messaging.redis_keys import queue_keys  # noqa: E402

TERMINAL = ("completed", "failed")
CRASH_LOOP = "the worker stopped"
TRANSIENT = ("503", "429", "timeout")
PERMANENT = ("400", "safety")
REQUEST_TIMEOUT_S = 3
MAX_CLAIMS = 3  # the deployed default, which the run keeps


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tag = "k" + uuid.uuid4().hex[:6]
        self.db_name = f"chaos_{self.tag}"
        self.admin_url = libpq(args.database_url)
        self.db_url = with_database(self.admin_url, self.db_name)
        self.namespace = f"chaos:{self.tag}"
        self.api_key = "chaos-planted-key-" + uuid.uuid4().hex
        self.folder = Path(tempfile.mkdtemp(prefix="chaos-"))
        self.redis = redis.Redis.from_url(args.redis_url)
        self.rng = random.Random(args.seed)
        self.entries: dict[str, str] = {}  # entry id -> marker
        self.published_at: dict[str, float] = {}
        self.terminal_at: dict[str, float] = {}
        self.expected_fail: set[str] = set()
        self.poison_marker = f"{self.tag}poison"
        self.poison_id = ""
        self.notes: list[str] = []
        self.db_created = False
        self.supervisor: Supervisor | None = None
        self.emulator: poison.PoisonServer | None = None
        self.hostile = 0

    # --- setup -------------------------------------------------------------------

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.db_url, autocommit=True, application_name="emotionviz-chaos")

    def setup(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True
        env = self.env()
        import subprocess

        migrate = subprocess.run(
            [sys.executable, "-m", "workers.entrypoints.cli", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        (self.folder / "migrate.log").write_text(migrate.stdout + migrate.stderr)
        if migrate.returncode != 0:
            raise SystemExit(f"chaos: migrate failed: {migrate.stderr.strip()[-300:]}")
        state = EmulatorState(
            api_key=self.api_key,
            latency_analysis_s=self.args.latency / 3,
            latency_image_s=self.args.latency * 2 / 3,
        )
        units = [
            Supervised(
                f"worker-{g}",
                [
                    "worker",
                    "--processes",
                    str(self.args.processes),
                    "--threads",
                    str(self.args.threads),
                ],
                env,
                self.folder / f"worker-{g}.log",
            )
            for g in "ab"[: self.args.groups]
        ]
        units.append(Supervised("scheduler", ["scheduler"], env, self.folder / "scheduler.log"))
        self.supervisor = Supervisor(units)
        self.emulator = poison.start(state, self.poison_marker, self.supervisor.worker_pids)
        env["GEMINI_BASE_URL"] = self.emulator.url
        self.supervisor.start()

    def env(self) -> dict[str, str]:
        base = self.emulator.url if self.emulator else "http://127.0.0.1:9"
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.args.redis_url,
            "REDIS_NAMESPACE": self.namespace,
            "PROVIDER": "gemini",
            "GEMINI_API_KEY": self.api_key,
            "GEMINI_BASE_URL": base,
            "MEDIA_DIR": str(self.folder / "media"),
            "MEDIA_BASE_URL": "http://media.chaos/m",
            "LEASE_S": "10",
            "RECONCILE_GRACE_S": str(self.args.grace),
            "RECONCILE_EVERY_S": "15",  # the deployed default
            "MIN_BACKOFF_MS": "200",
            "MAX_BACKOFF_MS": "2000",
            "REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
            "WATCHDOG_INTERVAL_S": "1",
            "METRICS_PORT": "0",
            "DB_POOL_SIZE": "4",
            "LOG_FORMAT": "json",
            # Completion events go to a queue of the run's namespace: the verdict checks
            # one per terminal transition, each delivered.
            "EVENTS_QUEUE": "chaos.events",
        }

    # --- work --------------------------------------------------------------------

    def faults_for(self, marker: str, entry_id: str) -> list[Fault]:
        if self.args.poison_only:
            return []
        roll = self.rng.random()
        if roll < 0.02:
            self.expected_fail.add(entry_id)
            return [Fault(self.rng.choice(PERMANENT), "analysis", marker, times=100)]
        if roll < 0.32:
            kind = self.rng.choice(TRANSIENT)
            return [
                Fault(
                    kind,
                    self.rng.choice(("analysis", "image")),
                    marker,
                    times=self.rng.choice((1, 2)),
                    seconds=REQUEST_TIMEOUT_S + 1.0,
                )
            ]
        return []

    def add_entry(self, conn: psycopg.Connection[Any], user: object, marker: str) -> str:
        entry_id = conn.execute(
            "INSERT INTO emotion_entries (user_id, situation, emotions, intensity) "
            "VALUES (%s, %s, %s, 0.6) RETURNING id",
            (user, f"Situation {marker}: a long day at work", ["anxiety", "joy"]),
        ).fetchone()
        assert entry_id is not None
        return str(entry_id[0])

    def publish(self, entry_id: str, user_id: str) -> None:
        redis_id = str(uuid.uuid4())
        envelope = {
            "queue_name": "visualizations",
            "actor_name": "entry.created",
            "args": [{"version": 1, "entry_id": entry_id, "user_id": user_id}],
            "kwargs": {},
            "options": {"redis_message_id": redis_id},
            "message_id": str(uuid.uuid4()),
            "message_timestamp": int(time.time() * 1000),
        }
        self.push_raw("visualizations", json.dumps(envelope).encode(), redis_id)

    def push_raw(self, queue: str, body: bytes, redis_id: str) -> None:
        keys = queue_keys(self.namespace, queue)
        self.redis.hset(keys.ready_bodies, redis_id, body)
        self.redis.rpush(keys.ready, redis_id)

    def publisher(self, start: float) -> None:
        """Entries written then published as upstream does, spread over the window; the
        poison entry first (with --poison-only in the middle: it is then taken beside a
        full batch of ordinary entries, not alone before them)."""
        n, window = self.args.entries, self.args.window
        poison_at = n // 2 if self.args.poison_only else 0
        assert self.emulator is not None
        with self.connect() as conn:
            users = [
                conn.execute(
                    "INSERT INTO users (email, hashed_password, name) "
                    "VALUES (%s, 'x', 'Chaos') RETURNING id",
                    (f"{self.tag}-{u}@example.com",),
                ).fetchone()[0]  # type: ignore[index]
                for u in range(max(1, n // 5))
            ]
            for i in range(n):
                marker = self.poison_marker if i == poison_at else f"{self.tag}{i:05d}x"
                user = users[i % len(users)]
                entry_id = self.add_entry(conn, user, marker)
                if i == poison_at:
                    self.poison_id = entry_id
                    self.expected_fail.add(entry_id)
                else:
                    faults = self.faults_for(marker, entry_id)
                    with self.emulator.state.lock:
                        self.emulator.state.faults.extend(faults)
                self.entries[entry_id] = marker
                self.publish(entry_id, str(user))
                self.published_at[entry_id] = time.time()
                time.sleep(max(0.0, start + window * (i + 1) / n - time.time()))

    def publish_hostile(self) -> None:
        from tests.hostile.test_hostile_input import _hostile_bodies

        some = next(iter(self.entries))
        for queue, body in _hostile_bodies(uuid.UUID(some), uuid.uuid4()):
            redis_id = str(uuid.uuid4())
            if isinstance(body, dict):
                options = body.get("options")
                if isinstance(options, dict) and "redis_message_id" not in options:
                    options["redis_message_id"] = redis_id
                body = json.dumps(body).encode()
            self.push_raw(queue, body, redis_id)
            self.hostile += 1

    # --- observing ---------------------------------------------------------------

    def statuses(self) -> dict[str, list[tuple[str, str | None]]]:
        found: dict[str, list[tuple[str, str | None]]] = {}
        try:
            with self.connect() as conn:
                rows = conn.execute(
                    "SELECT e.id::text, v.status, v.error_message FROM emotion_entries e "
                    "LEFT JOIN visualizations v ON v.entry_id = e.id"
                ).fetchall()
        except psycopg.Error:
            return {}
        for entry_id, status, error in rows:
            if status is not None:
                found.setdefault(entry_id, []).append((status, error))
            else:
                found.setdefault(entry_id, [])
        return found

    def observe(self) -> dict[str, list[tuple[str, str | None]]]:
        now = time.time()
        seen = self.statuses()
        for entry_id, rows in seen.items():
            if rows and all(s in TERMINAL for s, _ in rows) and entry_id not in self.terminal_at:
                self.terminal_at[entry_id] = now
        return seen

    def waiting(self) -> set[str]:
        return {e for e in self.published_at if e not in self.terminal_at and e != self.poison_id}

    def processing(self) -> int:
        return sum(1 for rows in self.statuses().values() for s, _ in rows if s == "processing")

    # --- disruptions -------------------------------------------------------------

    def kill_worker(self, n: int) -> str:
        assert self.supervisor is not None
        deadline = time.time() + 10
        while self.processing() == 0 and time.time() < deadline:
            time.sleep(0.2)
        from chaos_parts.procs import children

        # The group whose turn it is, or the other one while it restarts.
        for _ in range(50):
            groups = self.supervisor.units[: self.args.groups]
            for unit in (groups[n % len(groups)], groups[(n + 1) % len(groups)]):
                victims = children(unit.proc.pid) if unit.proc else []
                if victims:
                    os.kill(victims[0], signal.SIGKILL)
                    return f"{unit.name} pid {victims[0]}"
            time.sleep(0.2)
        return "no worker process found (both restarting)"

    def flush_redis(self) -> str:
        keys = list(self.redis.scan_iter(match=f"{self.namespace}*"))
        if keys:
            self.redis.delete(*keys)
        return f"{len(keys)} keys of the namespace deleted"

    def kill_db_connections(self) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name = 'emotionviz'",
                (self.db_name,),
            ).fetchall()
        return f"{len(rows)} connections terminated"

    def kill_redis_clients(self) -> str:
        assert self.supervisor is not None
        port = self.redis.connection_pool.connection_kwargs.get("port")
        if not port:
            self.notes.append("Redis client kill skipped: Redis is not on TCP")
            return "skipped (not TCP)"
        ports = client_ports(self.supervisor.all_pids(), int(port))
        killed = 0
        for client in self.redis.client_list():
            if int(str(client.get("addr", ":0")).rsplit(":", 1)[1]) in ports:
                killed += int(self.redis.execute_command("CLIENT", "KILL", "ID", client["id"]))
        self.notes.append(
            "Redis restart simulated on the shared Redis: CLIENT KILL of the run's own "
            "client connections (other clients untouched)"
        )
        return f"{killed} client connections killed"

    # --- the run -----------------------------------------------------------------

    def run(self) -> Outcome:
        started = time.time()
        deadline = started + self.args.timeout
        window = self.args.window
        plan: list[tuple[float, str]] = [
            (0.10 + 0.08 * k, f"kill -9 worker #{k + 1}") for k in range(5)
        ]
        plan += [(0.55, "hostile corpus"), (0.60, "Redis flush (namespace)")]
        plan += [(0.72, "DB connections killed"), (0.85, "Redis connections killed")]
        if self.args.poison_only:
            plan = []
        publisher = threading.Thread(target=self.publisher, args=(started,), daemon=True)
        publisher.start()
        disruptions: list[Disruption] = []
        kills = 0
        while time.time() < deadline:
            self.observe()
            if plan and time.time() >= started + plan[0][0] * window:
                _, name = plan.pop(0)
                at, waiting = time.time(), self.waiting()
                if name.startswith("kill -9"):
                    detail = self.kill_worker(kills)
                    kills += 1
                elif name == "hostile corpus":
                    self.publish_hostile()
                    continue
                elif name.startswith("Redis flush"):
                    detail = self.flush_redis()
                elif name.startswith("DB"):
                    detail = self.kill_db_connections()
                else:
                    detail = self.kill_redis_clients()
                disruptions.append(Disruption(name, at, detail, waiting))
            done = not publisher.is_alive() and not plan
            if done and not self.waiting() and self.poison_id in self.terminal_at:
                break
            time.sleep(0.3)
        else:
            self.notes.append(f"stopped by the overall timeout ({self.args.timeout:.0f} s)")
        seen = self.observe()
        # Disruptions overlap: only the last one's "all terminal" is judged against the
        # 120 s acceptance (every row terminal within 120 s, no operator); earlier rows
        # are upper bounds that include the later disruptions and the poison's crashes.
        for d in disruptions[:-1]:
            d.limited = False
        for d in disruptions:
            ends = [self.terminal_at.get(e) for e in d.waiting]
            if all(t is not None for t in ends):
                d.all_terminal_s = max([t - d.at for t in ends if t is not None], default=0.0)
            after = [t for t in self.terminal_at.values() if t > d.at]
            d.resumed_s = min(after) - d.at if after else None
        assert self.emulator is not None
        d = Disruption("poison entry (all crashes)", started, limited=False)
        if self.poison_id in self.terminal_at:
            d.all_terminal_s = self.terminal_at[self.poison_id] - started
        d.detail = f"{len(self.emulator.crashes)} kills of the process holding it"
        disruptions.append(d)
        return self.outcome(seen, disruptions, time.time() - started)

    def outcome(
        self,
        seen: dict[str, list[tuple[str, str | None]]],
        disruptions: list[Disruption],
        seconds: float,
    ) -> Outcome:
        assert self.supervisor is not None and self.emulator is not None
        terminal_rows, events, undelivered = self.completion_events()
        self.supervisor.stop()
        completed = failed_expected = failed_unexpected = lost = dup_rows = 0
        for entry_id in self.entries:
            rows = seen.get(entry_id, [])
            dup_rows += int(len(rows) > 1)
            status = rows[0][0] if rows else None
            if status == "completed":
                completed += 1
                failed_unexpected += int(entry_id in self.expected_fail)
            elif status == "failed":
                if entry_id in self.expected_fail:
                    failed_expected += 1
                else:
                    failed_unexpected += 1
                    print(f"failed unexpectedly: entry {entry_id}: {rows[0][1]}")
            else:
                lost += 1
        poison_rows = seen.get(self.poison_id, [])
        poison_status = poison_rows[0][0] if poison_rows else "no row"
        if poison_status == "failed" and CRASH_LOOP in (poison_rows[0][1] or ""):
            poison_status = "failed (crash loop)"
        dup_images, orphans = self.images()
        with self.emulator.state.lock:
            calls = [c for c in self.emulator.state.calls if self.tag in c["text"]]
            paid = sum(
                1
                for c in self.emulator.state.calls
                if c["accepted"] and not c["answered_429"] and not c["refused"]
            )
        kills = sum(1 for d in disruptions if d.name.startswith("kill -9"))
        return Outcome(
            entries=len(self.entries),
            completed=completed,
            failed_expected=failed_expected,
            expected_failures=len(self.expected_fail),
            failed_unexpected=failed_unexpected,
            lost=lost,
            duplicated_rows=dup_rows,
            duplicated_images=dup_images,
            orphan_images=orphans,
            analysis_calls=sum(1 for c in calls if c["kind"] == "analysis"),
            image_calls=sum(1 for c in calls if c["kind"] == "image"),
            poison_status=poison_status,
            poison_crashes=len(self.emulator.crashes),
            # Alone, the poison is the only row its crashes are blamed on: exactly.
            exact_poison_crashes=MAX_CLAIMS if self.args.poison_only else None,
            secrets_found=self.secrets(),
            hostile_published=self.hostile,
            seconds=seconds,
            disruptions=disruptions,
            notes=self.notes,
            ledger_calls=self.ledger_calls(),
            paid_calls=paid,
            cut_bound=(kills + len(self.emulator.crashes)) * self.threads(),
            terminal_rows=terminal_rows,
            events=events,
            events_undelivered=undelivered,
        )

    def completion_events(self, wait_s: float = 30.0) -> tuple[int, int, int]:
        """(terminal rows, visualization.completed|failed events, events not yet delivered to the
        queue subscriber), once every event has been delivered or ``wait_s`` passed:
        the workers' dispatchers deliver within a poll or two of the last transition."""
        query = """
            SELECT (SELECT count(*) FROM visualizations WHERE status IN ('completed', 'failed')),
                   (SELECT count(*) FROM completion_events WHERE kind LIKE 'visualization.%'),
                   (SELECT count(*) FROM completion_events e
                    WHERE e.kind LIKE 'visualization.%' AND NOT EXISTS (
                        SELECT 1 FROM event_deliveries d
                        WHERE d.event_id = e.id AND d.status = 'delivered'))
        """
        deadline = time.monotonic() + wait_s
        with self.connect() as conn:
            while True:
                row = conn.execute(query).fetchone()
                assert row is not None
                terminal, events, undelivered = (int(v) for v in row)
                if not undelivered or time.monotonic() > deadline:
                    return terminal, events, undelivered
                time.sleep(0.5)

    def ledger_calls(self) -> int:
        """The paid-call ledger's rows (this run's database holds only this run's)."""
        with self.connect() as conn:
            row = conn.execute("SELECT count(*) FROM model_calls").fetchone()
        return int(row[0]) if row else 0

    def threads(self) -> int:
        """Worker threads per process: the calls one kill can cut at most."""
        return int(self.args.threads)  # set by parse()

    def images(self) -> tuple[int, int]:
        """(entries with more than one image file, image files of no row)."""
        with self.connect() as conn:
            owner = {
                str(v): str(e)
                for v, e in conn.execute("SELECT id, entry_id FROM visualizations").fetchall()
            }
        per_entry: dict[str, int] = {}
        orphans = 0
        for path in (self.folder / "media").rglob("*"):
            if not path.is_file() or path.name.startswith(".") or "_thumb" in path.name:
                continue
            entry = owner.get(path.stem)
            if entry is None:
                orphans += 1
            else:
                per_entry[entry] = per_entry.get(entry, 0) + 1
        return sum(1 for n in per_entry.values() if n > 1), orphans

    def secrets(self) -> int:
        """Places the planted API key appears: rows, Redis values, logs."""
        found = 0
        with self.connect() as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                ).fetchall()
            ]
            for table in tables:
                found += int(
                    conn.execute(
                        f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE %s',
                        (f"%{self.api_key}%",),
                    ).fetchone()[0]  # type: ignore[index]
                )
        needle = self.api_key.encode()
        for key in self.redis.scan_iter(match=f"{self.namespace}*"):
            kind = self.redis.type(key).decode()
            value: Any = b""
            if kind == "string":
                value = self.redis.get(key)
            elif kind == "hash":
                value = self.redis.hgetall(key)
            elif kind == "list":
                value = self.redis.lrange(key, 0, -1)
            elif kind == "set":
                value = self.redis.smembers(key)
            elif kind == "zset":
                value = self.redis.zrange(key, 0, -1)
            found += int(needle in repr(value).encode() or needle in key)
        for log in self.folder.glob("*.log"):
            found += log.read_bytes().count(needle)
        return found

    def cleanup(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.emulator is not None:
            self.emulator.shutdown()
            self.emulator.server_close()
        try:
            keys = list(self.redis.scan_iter(match=f"{self.namespace}*"))
            if keys:
                self.redis.delete(*keys)
        except redis.RedisError as exc:
            print(f"chaos: could not clean the Redis namespace: {exc}", file=sys.stderr)
        if self.db_created:
            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        if self.args.keep:
            print(f"chaos: logs and media kept in {self.folder}", file=sys.stderr)
        else:
            shutil.rmtree(self.folder, ignore_errors=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--short", action="store_true", help="the CI size: 40 entries, 30 s window")
    p.add_argument(
        "--poison-only",
        action="store_true",
        help="only the poison entry beside the others (default 41 entries over 1 s, one group)",
    )
    p.add_argument("--entries", type=int, help="entries in the batch (default 200; short 40)")
    p.add_argument("--window", type=float, help="seconds over which entries are published")
    p.add_argument(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres"),
        help="a server where a scratch database may be created (default TEST_DATABASE_URL)",
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis (a unique namespace is used and deleted; default TEST_REDIS_URL)",
    )
    p.add_argument(
        "--groups",
        type=int,
        choices=(1, 2),
        help="supervised `emotionviz worker` groups (default 2; poison 1)",
    )
    p.add_argument("--processes", type=int, default=1, help="processes per worker group")
    p.add_argument("--threads", type=int, help="threads per process (default 4; poison 32)")
    p.add_argument(
        "--latency", type=float, help="emulated s per entry, 2 calls (default 0.9; poison 2)"
    )
    p.add_argument("--grace", type=int, default=20, help="RECONCILE_GRACE_S for the run")
    p.add_argument("--timeout", type=float, help="hard overall limit, s (default 600; short 280)")
    p.add_argument("--seed", type=int, default=10)
    p.add_argument("--keep", action="store_true", help="keep the logs and media folder")
    args = p.parse_args(argv)
    if args.poison_only:
        # The poison and 40 ordinary entries, published at once onto many threads with
        # slower calls: many rows are in flight beside the poison when it kills.
        args.entries = args.entries or 41
        args.window = args.window or 1.0
        args.threads = args.threads or 32  # the deployed WORKER_THREADS
        args.latency = args.latency or 2.0
        # One supervised worker: every suspect is claimed again in the poison's process
        # (with two, half the time in the other). The old code failed 1-6 of the 40 in
        # 6 of 10 runs of such variants: only when the poison is claimed again beside
        # suspects, not when it comes back first and runs alone before them.
        args.groups = args.groups or 1
    args.groups = args.groups or 2
    args.threads = args.threads or 4
    args.latency = args.latency or 0.9
    args.entries = args.entries or (40 if args.short else 200)
    args.window = args.window or (30.0 if args.short else 60.0)
    args.timeout = args.timeout or (280.0 if args.short else 600.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    chaos = Chaos(args)

    timer = hard_timeout("chaos", args.timeout + 90, chaos.cleanup)
    print(
        f"chaos {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {args.entries} entries over "
        f"{args.window:.0f} s, {args.groups} worker group(s) x {args.processes} process(es) x "
        f"{args.threads} threads, LEASE_S=10, RECONCILE_GRACE_S={args.grace}, reconcile every 15 s, seed {args.seed}",
        flush=True,
    )
    try:
        chaos.setup()
        outcome = chaos.run()
    finally:
        chaos.cleanup()
        timer.cancel()
    print(render(outcome), flush=True)
    return 1 if outcome.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
