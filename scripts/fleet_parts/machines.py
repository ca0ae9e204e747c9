"""A simulated machine: its own process groups (the worker, the scheduler, optionally the
console), its own machine name (HOSTNAME: the logs' "machine"), metrics port and work
folder, and its own proxies to PostgreSQL (through PgBouncer and direct) and Redis, so
faults hit it alone. Pictures go to the shared object store: no machine keeps a copy."""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

from chaos_parts.procs import Supervised, Supervisor

from fleet_parts.proxy import FaultyProxy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Machine:
    name: str
    env: dict[str, str]
    folder: Path
    pg_pooled: FaultyProxy
    pg_direct: FaultyProxy
    redis: FaultyProxy
    metrics_port: int
    console_port: int | None = None
    units: list[Supervised] = field(default_factory=list)
    supervisor: Supervisor | None = None
    killed_at: float | None = None

    @property
    def postgres_proxies(self) -> list[FaultyProxy]:
        return [self.pg_pooled, self.pg_direct]

    def start(self, worker_argv: list[str]) -> None:
        units = [
            Supervised(f"{self.name}-worker", worker_argv, self.env, self.folder / "worker.log"),
            Supervised(
                f"{self.name}-scheduler", ["scheduler"], self.env, self.folder / "scheduler.log"
            ),
        ]
        if self.console_port is not None:
            units.append(
                Supervised(
                    f"{self.name}-console",
                    ["console", "--port", str(self.console_port)],
                    self.env,
                    self.folder / "console.log",
                )
            )
        self.units = units
        # Restart=always, as systemd or a container runtime would on a real machine.
        self.supervisor = Supervisor(units)
        self.supervisor.start()

    def pids(self) -> list[int]:
        return [pid for unit in self.units for pid in unit.pids()]

    def kill(self, at: float) -> int:
        """The machine dies: every process SIGKILLed at once, nothing restarts it."""
        assert self.supervisor is not None
        self.supervisor.halt()  # no restart: the machine is gone
        victims = self.pids()
        for unit in self.units:
            if unit.proc is not None and unit.proc.poll() is None:
                os.killpg(unit.proc.pid, signal.SIGKILL)
        for unit in self.units:
            if unit.proc is not None:
                unit.proc.wait()
                unit.proc = None
        self.killed_at = at
        return len(victims)

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()

    def restarts(self) -> int:
        return sum(unit.restarts for unit in self.units)
