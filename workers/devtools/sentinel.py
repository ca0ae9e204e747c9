"""A Redis primary, its replica and three sentinels on free loopback ports (Debian's
``redis-server`` and ``redis-sentinel``): the failover test (tests/ha/) and anyone who
wants to try ``REDIS_URL=redis+sentinel://`` by hand. Each server runs in its own
process group and is stopped when the context ends. Development tooling: product code
never imports it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from domain.errors import ConfigurationError
from workers.devtools.replication_link import ReplicationLink, free_port

SERVICE = "emotionviz"


class SentinelUnavailableError(ConfigurationError):
    """redis-server or redis-sentinel is not installed (scripts/_test_tools.sh installs
    Debian's packages as root)."""


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    path = f"/usr/bin/{name}"
    return path if os.access(path, os.X_OK) else None


@dataclass
class SentinelCluster:
    """The servers of one run. ``url`` is the ``redis+sentinel://`` URL for REDIS_URL."""

    url: str
    service: str
    primary_port: int
    replica_port: int
    sentinel_ports: list[int]
    password: str | None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    link: ReplicationLink | None = None  # with ``replication_link``: the replica's feed

    def admin(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=self.password, socket_timeout=2)

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def primary_address(self) -> tuple[str, int] | None:
        """The primary the sentinels name now (the first that answers), or None."""
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError, OSError):
                answer: Any = self.sentinel(port).sentinel_get_master_addr_by_name(self.service)
                if answer:
                    host, found = answer
                    return str(host if isinstance(host, str) else host.decode()), int(found)
        return None

    def kill(self, name: str) -> None:
        """SIGKILL one server (``primary``, ``replica``, ``sentinel-N``): no shutdown,
        no save, its clients' connections reset."""
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_port(proc: subprocess.Popen[bytes], port: int, log: Path, deadline: float) -> None:
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"redis on port {port} did not start (exit {proc.poll()}): {tail}")
        time.sleep(0.05)


def _wait_until(what: str, ready: object, deadline: float) -> None:
    assert callable(ready)
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"sentinel setup: {what} not seen in time")
        time.sleep(0.1)


@contextlib.contextmanager
def running_sentinels(
    log_dir: Path,
    *,
    password: str | None = None,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 10_000,
    start_timeout_s: float = 30.0,
    replication_link: bool = False,
) -> Iterator[SentinelCluster]:
    """A primary, one replica and three sentinels (quorum 2) watching service
    ``emotionviz``, all on 127.0.0.1; yields once the sentinels know the replica and
    each other (a failover can then happen). Raises SentinelUnavailableError when the
    binaries are missing, RuntimeError when a server does not start.

    ``replication_link``: the replica replicates through a relay the caller can freeze
    (``cluster.link.freeze()``: workers/devtools/replication_link.py), to lose writes
    for real. The sentinels would point the replica back at the primary itself after
    twice ``failover_timeout_ms``: keep that longer than the run."""
    server, sentinel = _binary("redis-server"), _binary("redis-sentinel")
    if server is None or sentinel is None:
        raise SentinelUnavailableError(
            "redis-server and redis-sentinel are not installed "
            "(scripts/_test_tools.sh installs Debian's packages as root)"
        )
    folder = Path(tempfile.mkdtemp(prefix="emotionviz-sentinel-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    auth = f'requirepass "{password}"\nmasterauth "{password}"\n' if password else ""
    primary, replica = free_port(), free_port()
    sentinels = [free_port() for _ in range(3)]
    auth_part = f":{quote(password, safe='')}@" if password else ""
    cluster = SentinelCluster(
        url=f"redis+sentinel://{auth_part}"
        + ",".join(f"127.0.0.1:{p}" for p in sentinels)
        + f"/{SERVICE}/0",
        service=SERVICE,
        primary_port=primary,
        replica_port=replica,
        sentinel_ports=sentinels,
        password=password,
    )
    if replication_link:
        cluster.link = ReplicationLink(primary)
    feed = cluster.link.port if cluster.link else primary
    configs: list[tuple[str, str, int, str]] = []
    for name, port, extra in (
        ("primary", primary, ""),
        ("replica", replica, f"replicaof 127.0.0.1 {feed}\n"),
    ):
        data = folder / name
        data.mkdir()
        configs.append(
            (
                name,
                server,
                port,
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {data}\n"
                'save ""\nappendonly no\nrepl-diskless-sync-delay 0\n' + auth + extra,
            )
        )
    # Each sentinel told its peers and the replica up front: found by themselves (the
    # hello channel, every 2 s) they took ~5 s before a failover could happen.
    ids = [os.urandom(20).hex() for _ in sentinels]
    for i, port in enumerate(sentinels, 1):
        peers = "".join(
            f"sentinel known-sentinel {SERVICE} 127.0.0.1 {other} {ids[j]}\n"
            for j, other in enumerate(sentinels)
            if other != port
        )
        configs.append(
            (
                f"sentinel-{i}",
                sentinel,
                port,
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {folder}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
                f"sentinel myid {ids[i - 1]}\n"
                f"sentinel known-replica {SERVICE} 127.0.0.1 {replica}\n"
                + peers
                + (f'sentinel auth-pass {SERVICE} "{password}"\n' if password else ""),
            )
        )
    deadline = time.monotonic() + start_timeout_s
    try:
        for name, binary, port, text in configs:
            conf = folder / f"{name}.conf"  # a sentinel rewrites its own file
            conf.write_text(text)
            log = log_dir / f"redis-{name}.log"
            with log.open("ab") as log_file:
                cluster.procs[name] = subprocess.Popen(
                    [binary, str(conf)],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killed as one
                )
            _wait_port(cluster.procs[name], port, log, deadline)

        def replicated() -> bool:
            with contextlib.suppress(redis.RedisError):
                return bool(
                    cluster.admin(replica).info("replication")["master_link_status"] == "up"
                )
            return False

        _wait_until("the replica in sync", replicated, deadline)

        def known() -> bool:
            for port in sentinels:
                try:
                    state: Any = cluster.sentinel(port).sentinel_master(SERVICE)
                except redis.RedisError:
                    return False
                if (
                    int(state.get("num-slaves", 0)) < 1
                    or int(state.get("num-other-sentinels", 0)) < 2
                ):
                    return False
            return True

        _wait_until("the sentinels knowing the replica and each other", known, deadline)
        yield cluster
    finally:
        for proc in cluster.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in cluster.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if cluster.link is not None:
            cluster.link.close()
        shutil.rmtree(folder, ignore_errors=True)
