"""A Redis primary killed mid-run behind Sentinel (issue 22.1).

Real servers (Debian's redis-server and redis-sentinel: a primary, a replica, three
sentinels on loopback ports: workers/devtools/sentinel.py), a real worker process and
the model emulator; REDIS_URL=redis+sentinel://. The producer publishes entries through
the documented producer API while the primary is SIGKILLed; every entry must complete,
none twice, with no more image calls than entries plus those in flight at the kill. The
run prints the publish gap and the time to recover (docs/reliability.md keeps a run's
figures).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.errors import PublishFailedError
from tests.conftest import DatabaseFactory
from tests.e2e.conftest import Harness, running_harness
from workers.devtools.replication_link import free_port
from workers.devtools.sentinel import SentinelCluster, SentinelUnavailableError, running_sentinels
from workers.messaging import failover
from workers.messaging.broker import build_broker
from workers.messaging.producer import Producer
from workers.messaging.redis_clients import client_for, pooled_client
from workers.producer_api import ProducerAPI
from workers.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# Entries published before the kill, on the primary only (the replica's feed frozen, the
# worker stopped: their messages die with the primary), and from the kill on.
BEFORE, LOST, AFTER = 20, 6, 20
PASSWORD = "s3cret-sentinel-pw"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    try:
        with running_sentinels(
            tmp_path_factory.mktemp("sentinel"),
            password=PASSWORD,
            replication_link=True,  # to lose writes for real
            failover_timeout_ms=120_000,  # no "+fix-slave-config" around the link
        ) as c:
            yield c
    except SentinelUnavailableError as exc:
        pytest.skip(str(exc))


@dataclass
class Publisher:
    """Publishes entries one after another, timing each publish and noting refusals."""

    harness: Harness
    api: ProducerAPI
    marker: str
    entries: list[uuid.UUID] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)  # when a publish was refused
    done_at: dict[uuid.UUID, float] = field(default_factory=dict)  # publish returned

    def one(self) -> uuid.UUID:
        entry_id, user_id = self.harness.make_entry(self.marker)
        self.entries.append(entry_id)
        try:
            self.api.entry_created(entry_id, user_id)
        except PublishFailedError:
            # Committed, message refused: the work is in the database (the failover's
            # reconcile, or the periodic one, publishes it).
            self.refused.append(time.monotonic())
        self.done_at[entry_id] = time.monotonic()
        return entry_id


def _completed_at(h: Harness, entry_ids: list[uuid.UUID]) -> dict[str, int]:
    with h.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT status, count(*) FROM visualizations WHERE entry_id = ANY(:ids) "
                "GROUP BY status"
            ),
            {"ids": entry_ids},
        )
        return {s: int(n) for s, n in rows}


def _processing(h: Harness, marker: str) -> int:
    return h.statuses(marker).get("processing", 0)


def test_a_killed_primary_loses_no_entry_and_pays_none_twice(
    cluster: SentinelCluster, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    env = {"REDIS_SENTINEL_POLL_S": "0.2", "RECONCILE_GRACE_S": "300"}
    with running_harness(
        database_factory, cluster.url, tmp_path, env=env, start=False, threads=8
    ) as h:
        h.__dict__["redis"] = client_for(cluster.url)  # the harness's own client, too
        h.emulator.state.latency_image_s = 0.3  # so the kill finds pictures in flight
        h.start_worker(8)
        settings = Settings(_env_file=None, redis_namespace=h.namespace)  # type: ignore[call-arg]
        broker = build_broker(settings, cluster.url)
        api = ProducerAPI(lambda: UnitOfWork(make_session_factory(h.engine), Producer(broker)))
        marker = "ha" + uuid.uuid4().hex[:8]
        pub = Publisher(h, api, marker)
        try:
            for _ in range(BEFORE):
                pub.one()
            old = cluster.primary_address()
            assert cluster.link is not None and old is not None
            primary = cluster.admin(old[1])
            primary.wait(1, 5000)  # the replica has everything so far
            os.killpg(h.workers[0].pid, signal.SIGSTOP)  # nobody takes the next ones
            try:
                cluster.link.freeze()
                lost = [pub.one() for _ in range(LOST)]  # enqueued on the primary only
                in_flight = _processing(h, marker)
                # The primary and the sentinel on its machine, first in the URL: every
                # lookup finds it dead before asking the next.
                cluster.kill("primary")
                killed = time.monotonic()
                cluster.kill("sentinel-1")
            finally:
                os.killpg(h.workers[0].pid, signal.SIGCONT)
            after: list[uuid.UUID] = [pub.one() for _ in range(AFTER)]
            first_after = after[0]
            gap = pub.done_at[first_after] - killed  # the first publish's wait
            deadline = killed + 45
            recovered: float | None = None
            while time.monotonic() < deadline:
                if recovered is None and _completed_at(h, [first_after]).get("completed"):
                    recovered = time.monotonic() - killed
                if _completed_at(h, pub.entries).get("completed") == len(pub.entries):
                    break
                time.sleep(0.1)
            drained = time.monotonic() - killed
            new = cluster.primary_address()
            seen = _wait_record(h, 10)

            statuses = _completed_at(h, pub.entries)
            assert statuses == {"completed": BEFORE + LOST + AFTER}, (
                statuses,
                h.log_path.read_text(errors="replace")[-4000:],
            )
            with h.engine.connect() as conn:
                twice = conn.execute(
                    text(
                        "SELECT payload->>'entry_id', count(*) FROM completion_events "
                        "WHERE payload->>'entry_id' = ANY(:ids) GROUP BY 1 HAVING count(*) > 1"
                    ),
                    {"ids": [str(e) for e in pub.entries]},
                ).all()
            assert twice == [], f"completed twice: {twice}"
            images = h.calls(marker).get("image", 0)
            assert images <= len(pub.entries) + in_flight, (images, in_flight)
            assert new is not None and old is not None and new != old
            assert seen is not None and seen["reconciled"] is True, seen
            # The lost ones came back through the failover's reconcile, not 300 s later.
            assert int(str(seen["republished"])) >= len(lost), seen
            _cli_follows_the_new_primary(h, seen)
            log = h.log_path.read_text(errors="replace")
            for line in ("redis failover watch started", "redis failover seen"):
                assert line in log
            assert "redis failover reconciled" in log
            assert PASSWORD not in log
            print(
                f"\nsentinel failover: {len(pub.entries)} entries, primary {old} killed "
                f"(SIGKILL, with the first sentinel) with {in_flight} pictures in flight and {LOST} entries' messages "
                f"on it alone; new primary {new}\n"
                f"  publish gap: first publish after the kill returned after {gap:.2f} s; "
                f"{len(pub.refused)} publishes refused\n"
                f"  watch: no primary named for {seen['no_primary_s']} s; failover "
                f"reconcile republished {seen['republished']} rows\n"
                f"  recovery: first entry published after the kill completed "
                f"{recovered if recovered is None else round(recovered, 2)} s after it; "
                f"all {len(pub.entries)} completed {drained:.2f} s after it\n"
                f"  image calls {images} for {len(pub.entries)} entries "
                f"(in flight at the kill: {in_flight}); completed twice: 0"
            )
        finally:
            broker.close()


def _cli(h: Harness, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Run ``emotionviz`` commands at once (each is a process of its own)."""
    env = {**h.env, "PYTHONPATH": str(Path.cwd())}
    procs = [
        (
            args,
            subprocess.Popen(
                [sys.executable, "-m", "workers.entrypoints.cli", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for args in commands
    ]
    done = []
    for args, proc in procs:
        out, err = proc.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
    return done


def _cli_follows_the_new_primary(h: Harness, seen: dict[str, object]) -> None:
    """Operators' commands reach the new primary through the same URL, show the
    failover, count the sentinels' connections, and never print the password."""
    runs = _cli(
        h,
        ("status", "--json"),
        ("status",),
        ("dlq", "list", "--json"),
        ("health", "--json"),
        ("doctor", "--machines", "2", "--json"),
    )
    status, table, dlq, health, doctor = runs
    for run in (status, table, dlq, health):
        assert run.returncode == 0, (run.args, run.stdout, run.stderr[-2000:])
    shown = json.loads(status.stdout)["redis_failover"]
    assert shown["new"] == seen["new"] and shown["reconciled"] is True
    assert "last Redis failover" in table.stdout, table.stdout
    # Exit 1 would only mean this test's PostgreSQL is too small for two machines.
    assert doctor.returncode in (0, 1), doctor.stderr[-2000:]
    notes = json.loads(doctor.stdout)["notes"]
    assert any("each of the 3 sentinels gets up to" in note for note in notes), notes
    for run in runs:
        assert PASSWORD not in run.stdout + run.stderr


def _wait_record(h: Harness, timeout_s: float) -> dict[str, object] | None:
    """The failover's record (workers/messaging/failover.py), once its reconcile ran."""
    deadline = time.monotonic() + timeout_s
    found = None
    while time.monotonic() < deadline:
        found = failover.last(h.redis, h.namespace)
        if found is not None and "reconciled" in found:
            return found
        time.sleep(0.1)
    return found


def test_the_watch_sees_nothing_while_the_primary_stays(cluster: SentinelCluster) -> None:
    calls: list[failover.FailoverSeen] = []
    watch = failover.FailoverWatch(cluster.url, calls.append, poll_s=0.05)
    try:
        assert watch.check() is None  # the first answer is the reference
        assert watch.primary is not None
        assert PASSWORD not in watch.where and watch.where.endswith("/emotionviz/0")
        assert watch.check() is None
        assert calls == []
    finally:
        watch.stop()


def test_the_sentinel_pool_makes_a_thread_wait_for_a_free_connection(
    cluster: SentinelCluster,
) -> None:
    """REDIS_MAX_CONNECTIONS behind Sentinel as on one server: a thread that finds none
    free waits (up to its wait) instead of failing at once (redis_clients.py)."""
    client = pooled_client(cluster.url, 1, wait_s=0.3)
    pool = client.connection_pool
    held = pool.get_connection()
    try:
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError, match="No connection available"):
            pool.get_connection()
        assert time.monotonic() - started >= 0.3
    finally:
        pool.release(held)
    assert client.ping() is True
    assert (held.host, held.port) == cluster.primary_address()
    client.close()


def test_no_sentinel_answering_is_one_short_line_without_the_password() -> None:
    ports = [free_port(), free_port()]  # nobody listens there
    url = f"redis+sentinel://:{PASSWORD}@" + ",".join(f"127.0.0.1:{p}" for p in ports) + "/svc"
    # No retries here (redis-py's default backs off 1, 2, 4 s: what rides out a failover).
    client = client_for(url, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError) as caught:
        client.ping()
    line = str(caught.value)
    assert line.startswith("no primary for 'svc': the sentinels at 127.0.0.1:")
    assert len(line) < 200 and PASSWORD not in line
