"""The two fleet runs: faults across machines (FleetRun) and throughput at M machines
(ScaleRun)."""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from domain.messages import QUEUES
from fleet_parts.infra import CONSOLE_TOKEN, Infra
from fleet_parts.machines import Machine, free_port
from fleet_parts.outcome import Connections, Fault, FleetOutcome, render
from fleet_parts.workload import Upstream
from workers.observability.connection_budget import services, worker_service
from workers.settings import Settings

PARTITION_S = 30.0
SLOW_S = 0.1  # each direction: a round trip pays 200 ms
# An intake turn's prompt: "turn N of at most M", or the last one's.
TURN = re.compile(r"turn (\d+) of at most|(That was the last question)")


def worker_argv(threads: int) -> list[str]:
    return ["worker", "--processes", "1", "--threads", str(threads)]


def machine_budget(machine: Machine) -> tuple[int, int]:
    """The connection budget's peak for one machine of the fleet's layout: the worker
    (1 process on all four queues), a scheduler (and the console where it runs), from the
    doctor's arithmetic over that machine's settings."""
    env = {k.lower(): v for k, v in machine.env.items()}
    threads = int(env["worker_threads"])
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        worker_processes=1,
        worker_threads=threads,
        metrics_port=int(env["metrics_port"]),
        db_pool_size=0,
    )
    worker = worker_service(settings, "worker", 1, threads, len(QUEUES))
    found = {s.name: s for s in services(settings, 1, intake_processes=0)}
    pg = worker.postgres.peak + found["scheduler"].postgres.peak
    rd = worker.redis.peak + found["scheduler"].redis.peak
    if machine.console_port is not None:
        pg += found["console"].postgres.peak
        rd += found["console"].redis.peak
    return pg, rd


@dataclass
class Observation:
    terminal_at: dict[str, float]  # entry id -> when its row was completed/failed
    sessions_done_at: dict[str, float]  # session id -> when complete and its entry terminal


class FleetRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.infra = Infra(args.database_url, args.redis_url, keep=args.keep, label="faults")
        self.marker = re.compile(rf"{self.infra.tag}[es]\d+x")  # in every prompt of the run
        self.upstream: Upstream | None = None
        self.obs = Observation({}, {})
        self.faults: list[Fault] = []
        self.started = 0.0

    def describe(self) -> str:
        a = self.args
        return (
            f"{a.machines} machines x 1 process x {a.threads} threads, {a.entries} entries and "
            f"{a.conversations} intake conversations, emulator {a.latency[0]:g} s + "
            f"{a.latency[1]:g} s, PgBouncer, SeaweedFS S3, a proxy per machine and server"
        )

    # --- set-up ------------------------------------------------------------------------

    def setup(self) -> None:
        a, infra = self.args, self.infra
        infra.create_database()
        infra.start_pgbouncer(pool_size=4 * a.machines)
        infra.start_object_store()
        infra.start_emulator(a.latency[0], a.latency[1], machines=a.machines)
        extra = {
            "LEASE_S": "15",
            "RECONCILE_GRACE_S": "20",
            "RECONCILE_EVERY_S": "15",
            "REQUEST_TIMEOUT_S": "10",
            "MIN_BACKOFF_MS": "500",
            "MAX_BACKOFF_MS": "5000",
            "WATCHDOG_INTERVAL_S": "2",
        }
        for i in range(1, a.machines + 1):
            machine = infra.machine_env(f"m{i}", threads=a.threads, extra=extra)
            machine.console_port = free_port() if i >= 3 else None
        for machine in infra.machines:
            machine.start(worker_argv(a.threads))
        infra.wait_for_workers(a.machines)
        self.upstream = Upstream(infra.db_url, infra.redis_url, infra.namespace, infra.tag)

    # --- the run -----------------------------------------------------------------------

    def execute(self) -> int:
        self.setup()
        outcome = self.run()
        print(render(outcome), flush=True)
        return 1 if outcome.problems() else 0

    def plan(self) -> list[tuple[float, str]]:
        """(seconds after the start, action): kill m1 while it works, slow m3, cut m2
        from Redis and then from PostgreSQL for 30 s each."""
        redis_at = 10.0
        pg_at = redis_at + PARTITION_S + 5
        end = pg_at + PARTITION_S
        return [
            (5.0, "slow m3"),
            (8.0, "kill m1"),
            (redis_at, "partition m2 redis"),
            (redis_at + PARTITION_S, "heal m2 redis"),
            (pg_at, "partition m2 postgres"),
            (end, "heal m2 postgres"),
            (end, "heal m3"),
        ]

    def run(self) -> FleetOutcome:
        a, infra = self.args, self.infra
        assert self.upstream is not None
        plan = self.plan()
        # Work arrives until the last fault ends: every fault meets jobs in flight.
        window = plan[-1][0]
        self.started = time.time()
        deadline = self.started + a.timeout
        self.upstream.start(a.entries, a.conversations, window)
        machines = {m.name: m for m in infra.machines}
        open_faults: dict[str, Fault] = {}
        peak_watch = 0.0
        while time.time() < deadline:
            now = time.time()
            while plan and now >= self.started + plan[0][0]:
                _, action = plan.pop(0)
                verb, name, *what = action.split()
                m = machines[name]
                at = now - self.started
                if verb == "kill":
                    fault = Fault("killed (SIGKILL, every process)", name, at)
                    fault.detail = f"{m.kill(now)} processes"
                    self.faults.append(fault)
                elif verb == "partition":
                    server = what[0]
                    proxies = [m.redis] if server == "redis" else m.postgres_proxies
                    infra.proxies.partition(proxies, True)
                    fault = Fault(f"partitioned from {server} {PARTITION_S:.0f} s", name, at)
                    open_faults[action.replace("partition", "heal")] = fault
                    self.faults.append(fault)
                elif verb == "slow":
                    infra.proxies.slow([m.redis, m.pg_pooled, m.pg_direct], SLOW_S)
                    fault = Fault(f"links slowed by {2 * SLOW_S * 1000:.0f} ms", name, at)
                    open_faults["heal m3"] = fault
                    self.faults.append(fault)
                elif verb == "heal":
                    if what:
                        proxies = [m.redis] if what[0] == "redis" else m.postgres_proxies
                        infra.proxies.partition(proxies, False)
                    else:
                        infra.proxies.slow([m.redis, m.pg_pooled, m.pg_direct], 0.0)
                    open_faults.pop(action).until = at
            if now - peak_watch > 1.0:
                peak_watch = now
                self.observe()
            if not plan and not self.upstream.publishing() and self.all_done():
                break
            time.sleep(0.3)
        self.observe()
        return self.outcome(time.time() - self.started)

    # --- observing ---------------------------------------------------------------------

    def observe(self) -> None:
        now = time.time()
        try:
            with self.infra.direct() as conn:
                rows = conn.execute(
                    "SELECT v.entry_id::text, v.status FROM visualizations v "
                    "WHERE v.status IN ('completed', 'failed')"
                ).fetchall()
                sessions = conn.execute(
                    "SELECT s.id::text, e.id::text FROM intake_sessions s "
                    "JOIN emotion_entries e ON e.intake_session_id = s.id WHERE s.is_complete"
                ).fetchall()
        except Exception:  # noqa: BLE001 - a read that fails now is read again next second
            return
        for entry_id, _ in rows:
            self.obs.terminal_at.setdefault(entry_id, now)
        for session_id, entry_id in sessions:
            if entry_id in self.obs.terminal_at:
                self.obs.sessions_done_at.setdefault(session_id, now)

    def all_done(self) -> bool:
        assert self.upstream is not None
        with self.upstream.lock:
            entries = list(self.upstream.published.entries)
            sessions = list(self.upstream.published.sessions)
        return all(e in self.obs.terminal_at for e in entries) and all(
            s in self.obs.sessions_done_at for s in sessions
        )

    def recovery(self) -> float | None:
        """From the end of the last fault until everything published before it finished."""
        assert self.upstream is not None
        ends = [f.until for f in self.faults if f.until is not None]
        last = self.started + max(ends, default=0.0)
        finished: list[float] = []
        with self.upstream.lock:
            published = dict(self.upstream.published.published_at)
        for item, at in published.items():
            if at > last:
                continue
            done = self.obs.terminal_at.get(item) or self.obs.sessions_done_at.get(item)
            if done is None:
                return None
            finished.append(done)
        return max(0.0, max(finished, default=last) - last)

    def calls(self) -> list[dict[str, Any]]:
        state = self.infra.emulator_state
        assert state is not None
        with state.lock:
            return [dict(c) for c in state.calls if self.infra.tag in c["text"]]

    def work_of(self, call: dict[str, Any]) -> tuple[str, str] | None:
        """What a paid call was for: (entry or session marker, kind); None for a call
        the quota refused (not paid) or one of no entry of the run."""
        found = self.marker.search(call["text"])
        if call["answered_429"] or found is None:
            return None
        return found.group(0), _kind(call)

    def paid_calls(self, calls: list[dict[str, Any]]) -> tuple[int, int]:
        """(paid calls made, calls the work needed): one analysis and one picture per
        entry, one call per intake turn."""
        paid = [c for c in calls if not c["answered_429"]]
        return len(paid), len({w for c in paid if (w := self.work_of(c)) is not None})

    def repeated(self, calls: list[dict[str, Any]]) -> list[str]:
        """One line per call made more than once: which machines made it, when."""
        seen: dict[tuple[str, str], list[str]] = {}
        for call in calls:
            if (work := self.work_of(call)) is not None:
                seen.setdefault(work, []).append(f"{call['via']}@{call['at'] - self.started:.1f}s")
        return [
            f"repeated call: {m} {kind}: {', '.join(v)}"
            for (m, kind), v in sorted(seen.items())
            if len(v) > 1
        ]

    def exposed(self, calls: list[dict[str, Any]], fault: Fault) -> set[tuple[str, str]]:
        """The paid calls a fault may cause to be made again: the faulted machine's calls
        that were under way when it began or started while it lasted (a call's answer
        that could not be stored), as (entry or session marker, kind)."""
        begin = self.started + fault.at
        end = self.started + (fault.at if fault.until is None else fault.until)
        analysis_s, image_s = self.args.latency
        found: set[tuple[str, str]] = set()
        for c in calls:
            lasts = image_s if c["kind"] == "image" else analysis_s
            under_way = c["at"] <= end and c["at"] + lasts + 1.0 >= begin
            if c["via"] == fault.machine and under_way and (work := self.work_of(c)):
                found.add(work)
        return found

    def unexplained(self, calls: list[dict[str, Any]], exposed: set[tuple[str, str]]) -> int:
        """Calls made again that no fault explains (a duplicate the product caused)."""
        made = Counter(w for c in calls if (w := self.work_of(c)) is not None)
        return sum(n - 1 for work, n in made.items() if n > 1 and work not in exposed)

    def outcome(self, seconds: float) -> FleetOutcome:
        infra, upstream = self.infra, self.upstream
        assert upstream is not None
        upstream.stop()
        with infra.direct() as conn:
            per_entry = conn.execute(
                "SELECT e.id::text, count(v.id), "
                "count(*) FILTER (WHERE v.status = 'completed'), "
                "count(*) FILTER (WHERE v.status = 'failed') "
                "FROM emotion_entries e LEFT JOIN visualizations v ON v.entry_id = e.id "
                "GROUP BY e.id"
            ).fetchall()
            sessions = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE is_complete) FROM intake_sessions"
            ).fetchone()
            pictures = [
                (str(v), url)
                for v, url in conn.execute(
                    "SELECT entry_id, image_url FROM visualizations "
                    "WHERE status = 'completed' AND image_url IS NOT NULL"
                ).fetchall()
            ]
        assert sessions is not None
        calls = self.calls()
        exposed: set[tuple[str, str]] = set()
        for fault in self.faults:
            if not fault.name.startswith("links"):  # a slow link loses nothing
                at_fault = self.exposed(calls, fault)
                fault.in_flight = len(at_fault)
                exposed |= at_fault
        paid, needed = self.paid_calls(calls)
        repeated = self.repeated(calls)
        live = [m for m in infra.machines if m.killed_at is None and m.console_port]
        readable = {m.name: self.readable(m, pictures) for m in live}
        return FleetOutcome(
            entries=len(per_entry),
            sessions=int(sessions[0]),
            completed=sum(1 for _, _, c, _ in per_entry if c),
            failed=sum(1 for _, _, _, f in per_entry if f),
            lost=sum(1 for _, _, c, f in per_entry if not c and not f),
            duplicated_rows=sum(1 for _, n, _, _ in per_entry if n > 1),
            sessions_complete=int(sessions[1]),
            paid_calls=paid,
            expected_calls=needed,
            extra_calls=max(0, paid - needed),
            unexplained_calls=self.unexplained(calls, exposed),
            faults=self.faults,
            recovery_s=self.recovery(),
            connections=[self.connections(m) for m in infra.machines],
            pictures=len(pictures),
            pictures_readable=readable,
            objects=self.objects(),
            seconds=seconds,
            publish_errors=list(upstream.published.errors),
            unlabelled_lines=sum(self.unlabelled(m) for m in infra.machines),
            notes=[
                f"{m.name} restarted {m.restarts()} time(s)" for m in infra.machines if m.restarts()
            ]
            + repeated,
        )

    def connections(self, machine: Machine) -> Connections:
        pg, rd = machine_budget(machine)
        return Connections(
            machine.name,
            machine.pg_pooled.stats.peak + machine.pg_direct.stats.peak,
            machine.redis.stats.peak,
            pg,
            rd,
        )

    @staticmethod
    def unlabelled(machine: Machine) -> int:
        """Log lines of the machine's processes that do not name it (host)."""
        wrong = 0
        for log in machine.folder.glob("*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("{") and f'"machine": "fleet-{machine.name}"' not in line:
                    wrong += 1
        return wrong

    def readable(self, machine: Machine, pictures: list[tuple[str, str]]) -> int:
        """Pictures this machine's console serves (read through the object store)."""
        ok = 0
        for entry_id, _ in pictures:
            request = urllib.request.Request(
                f"http://127.0.0.1:{machine.console_port}/jobs/entry/{entry_id}/image/full",
                headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    ok += int(response.status == 200 and len(response.read()) > 100)
            except (urllib.error.URLError, OSError):
                continue
        return ok

    def objects(self) -> int:
        """Full-size pictures in the bucket (each has its thumbnail beside it)."""
        return sum(1 for key in self.infra.objects() if not key.endswith("_thumb.webp"))

    def cleanup(self) -> None:
        if self.upstream is not None:
            self.upstream.stop()
            self.upstream = None
        self.infra.close()


class ScaleRun:
    """Entries per second at M = 1, 2, 4 machines with the emulator at 2 s + 8 s: the
    work is I/O-bound, so this box's two cores are not the limit."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.infra: Infra | None = None

    def describe(self) -> str:
        a = self.args
        return (
            f"throughput at {', '.join(map(str, a.scale))} machines x 1 process x "
            f"{a.threads} threads, emulator {a.latency[0]:g} s + {a.latency[1]:g} s"
            + (f", shared image quota {a.quota}/min" if a.quota else "")
        )

    def execute(self) -> int:
        results: dict[int, dict[str, float]] = {}
        for machines in self.args.scale:
            results[machines] = self.step(machines)
            r = results[machines]
            print(
                f"M={machines}: {r['entries']:.0f} entries in {r['seconds']:.1f} s = "
                f"{r['rate']:.2f} entries/s; redis connections per machine {r['redis_peak']:.0f}, "
                f"redis commands per entry {r['commands_per_entry']:.1f}"
                + (
                    f"; quota fill {r['fill']:.1%}, 429s {r['rejected']:.2%}"
                    if self.args.quota
                    else ""
                ),
                flush=True,
            )
        base = results[min(results)]
        for machines, r in sorted(results.items()):
            print(f"M={machines}: {r['rate'] / base['rate']:.2f} x M={min(results)}")
        top = results[max(results)]
        ratio = top["rate"] / base["rate"]
        ideal = max(results) / min(results)
        print(
            f"scaling: M={max(results)} gives {ratio:.2f} x M={min(results)} (ideal {ideal:.0f} x)"
        )
        if self.args.quota:
            return 0 if top["fill"] >= 0.95 and top["rejected"] <= 0.01 else 1
        return 0 if ratio >= 0.9 * ideal else 1

    def step(self, machines: int) -> dict[str, float]:
        a = self.args
        infra = self.infra = Infra(
            a.database_url, a.redis_url, keep=a.keep, label=f"scale{machines}"
        )
        try:
            infra.create_database()
            infra.start_pgbouncer(pool_size=4 * machines)
            infra.start_object_store()
            quota = {"quota_image_per_minute": a.quota} if a.quota else {}
            infra.start_emulator(a.latency[0], a.latency[1], machines=machines, **quota)
            extra = {"IMAGE_RPM": str(a.quota)} if a.quota else {}
            extra |= {"ANALYSIS_RPM": "100000", "LOG_LEVEL": "WARNING"}
            if not a.quota:
                extra["IMAGE_RPM"] = "100000"
            for i in range(1, machines + 1):
                infra.machine_env(f"m{i}", threads=a.threads, extra=extra)
            for machine in infra.machines:
                machine.start(worker_argv(a.threads))
            infra.wait_for_workers(machines)
            rounds = 6  # a ramp and a tail of one entry's time each, amortised
            per_entry_s = sum(a.latency)
            # With a quota: enough work to keep it full for 3 minutes.
            entries = int(a.quota * 3) if a.quota else rounds * machines * a.threads
            client = redis.Redis.from_url(infra.redis_url)
            client.config_resetstat()
            before = _commands(client)
            upstream = Upstream(infra.db_url, infra.redis_url, infra.namespace, infra.tag)
            try:
                upstream.start(entries, 0, 0.5)
                deadline = time.time() + max(600.0, 20 * per_entry_s * rounds)
                finished = 0
                while finished < entries and time.time() < deadline:
                    time.sleep(1.0)
                    with infra.direct() as conn:
                        finished = int(
                            conn.execute(
                                "SELECT count(*) FROM visualizations "
                                "WHERE status IN ('completed', 'failed')"
                            ).fetchone()[0]  # type: ignore[index]
                        )
                after = _commands(client)
                per_command = _per_command(client)
                with infra.direct() as conn:
                    span = conn.execute(
                        "SELECT extract(epoch FROM max(processing_completed_at) "
                        "- min(processing_started_at)) FROM visualizations "
                        "WHERE status = 'completed'"
                    ).fetchone()
            finally:
                upstream.stop()
            client.close()
            if not finished or span is None or span[0] is None:
                raise SystemExit(f"fleet: nothing finished at M={machines}")
            seconds = float(span[0])
            state = infra.emulator_state
            assert state is not None
            with state.lock:
                images = [c for c in state.calls if c["kind"] == "image"]
            accepted = [c for c in images if c["accepted"]]
            rejected = sum(1 for c in images if c["answered_429"])
            fill = quota_fill(sorted(c["at"] for c in accepted), a.quota)
            top = sorted(per_command.items(), key=lambda kv: -kv[1])[:8]
            print(
                f"M={machines} redis commands per entry: "
                + ", ".join(f"{name} {n / max(1, finished):.1f}" for name, n in top),
                flush=True,
            )
            return {
                "entries": float(finished),
                "seconds": seconds,
                "rate": finished / seconds,
                "redis_peak": max(m.redis.stats.peak for m in infra.machines),
                "commands_per_entry": (after - before) / max(1, finished),
                "fill": fill,
                "rejected": rejected / max(1, len(images)),
            }
        finally:
            infra.close()
            self.infra = None

    def cleanup(self) -> None:
        if self.infra is not None:
            self.infra.close()


def quota_fill(accepted_at: list[float], quota: int) -> float:
    """The share of the quota used over the whole minutes after the first accepted call
    (a sliding-window quota admits ``quota`` in any 60 s): mean of accepted / quota."""
    if not quota or not accepted_at:
        return 0.0
    start = accepted_at[0]
    minutes = int((accepted_at[-1] - start) // 60)
    if minutes == 0:
        return 0.0
    per_minute = [0] * minutes
    for at in accepted_at:
        k = int((at - start) // 60)
        if k < minutes:
            per_minute[k] += 1
    return sum(per_minute) / (quota * minutes)


def _kind(call: dict[str, Any]) -> str:
    """What a paid call was for: an intake turn (by number, or the last), else its model
    kind (analysis, image)."""
    turn = TURN.search(call["text"])
    if turn is None:
        return str(call["kind"])
    return f"turn {turn.group(1)}" if turn.group(1) else "turn last"


@contextlib.contextmanager
def private_redis() -> Iterator[str | None]:
    """A Redis server of the step's own (Debian's redis-server, when installed): its
    command counts are the fleet's alone. None where there is no binary."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    folder = tempfile.mkdtemp(prefix="fleet-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _per_command(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(v["calls"])
        for name, v in stats.items()
        if isinstance(v, dict)
    }


def _commands(client: redis.Redis) -> int:
    """Commands the Redis server has run (server-wide: run nothing else beside it)."""
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values() if isinstance(v, dict))
