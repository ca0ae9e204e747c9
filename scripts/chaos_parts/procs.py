"""Processes of the chaos run: `emotionviz worker` groups restarted by a supervisor loop
(as systemd or compose would), the scheduler, and which process holds a socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in task.read_text().split()]
        except OSError:
            continue
    return found


def _tcp_connections() -> list[tuple[int, int, str]]:
    """(local port, remote port, socket inode) of every TCP connection (Linux /proc)."""
    found: list[tuple[int, int, str]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local = int(fields[1].rsplit(":", 1)[1], 16)
            remote = int(fields[2].rsplit(":", 1)[1], 16)
            found.append((local, remote, fields[9]))
    return found


def _socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets ``pid`` holds open."""
    inodes: set[str] = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        pass
    return inodes


def socket_owner(local_port: int, remote_port: int, candidates: list[int]) -> int | None:
    """The pid among ``candidates`` holding the loopback TCP connection
    local_port -> remote_port."""
    inodes = {
        inode
        for local, remote, inode in _tcp_connections()
        if local == local_port and remote == remote_port
    }
    return next((pid for pid in candidates if _socket_inodes(pid) & inodes), None)


def client_ports(pids: list[int], remote_port: int) -> set[int]:
    """Local ports of the loopback TCP connections these pids hold to ``remote_port``."""
    inodes = set().union(*(_socket_inodes(pid) for pid in pids)) if pids else set()
    return {
        local
        for local, remote, inode in _tcp_connections()
        if remote == remote_port and inode in inodes
    }


class Supervised:
    """One command kept running: started again whenever it exits, until stopped."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.exit_codes: list[int] = []

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.entrypoints.cli", *self.argv],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.exit_codes.append(int(self.proc.returncode))
            self.restarts += 1
            self.start()

    def pids(self) -> list[int]:
        """The parent and its worker processes (and their children)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        found, queue = [self.proc.pid], [self.proc.pid]
        while queue:
            more = children(queue.pop())
            found += more
            queue += more
        return found

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


class Supervisor:
    """Restarts any supervised command that exits, every half second, as
    `Restart=always` does; a short pause first, as a restart policy would."""

    def __init__(self, units: list[Supervised]) -> None:
        self.units = units
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        for unit in self.units:
            unit.start()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                for unit in self.units:
                    unit.check()

    def halt(self) -> None:
        """Restart nothing from now on (the units keep running): a machine that died."""
        self._stop.set()
        self._thread.join(timeout=5)

    def stop(self) -> None:
        self.halt()
        with self._lock:
            for unit in self.units:
                unit.stop()

    def worker_pids(self) -> list[int]:
        """Worker processes only (the children that run jobs), of every group."""
        found: list[int] = []
        for unit in self.units:
            if unit.name.startswith("worker") and unit.proc is not None:
                found += children(unit.proc.pid)
        return found

    def all_pids(self) -> list[int]:
        return [pid for unit in self.units for pid in unit.pids()]


def hard_timeout(name: str, seconds: float, cleanup: Callable[[], None]) -> threading.Timer:
    """A started timer that, if the run is still going after ``seconds``, cleans up and
    ends the process with exit 3 (a hung run must not outlive its CI job). Cancel it
    when the run ends."""

    def stop() -> None:
        print(f"{name}: hard timeout ({seconds:.0f} s): stopping", file=sys.stderr)
        try:
            cleanup()
        finally:
            os._exit(3)

    timer = threading.Timer(seconds, stop)
    timer.daemon = True
    timer.start()
    return timer
