"""Parts of scripts/bench_idle.py: worker processes with extra modules, the workers'
JSON log read as it grows, the provider time the workers record, CPU snapshots."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psutil
import redis
from common import Workers

from domain.messages import MessageV1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerGroup(Workers):
    """``python -m dramatiq workers.entrypoints.worker [modules]`` as `emotionviz worker`
    runs it (scripts/bench/common.py's Workers, with modules of our choice)."""

    def __init__(
        self,
        env: dict[str, str],
        processes: int,
        threads: int,
        queues: Sequence[str],
        modules: Sequence[str] = (),
    ) -> None:
        super().__init__(env, processes, threads, queues, modules=modules, log_prefix="idle-worker")

    def processes_by_kind(self) -> dict[str, list[psutil.Process]]:
        """The worker processes (many threads) and the rest (Dramatiq's parent, the
        metrics server)."""
        parent = psutil.Process(self.proc.pid)
        kinds: dict[str, list[psutil.Process]] = {"worker": [], "other": [parent]}
        for child in parent.children(recursive=True):
            kinds["worker" if child.num_threads() > 8 else "other"].append(child)
        return kinds


@dataclass
class LogTail:
    """The workers' JSON log records, read as the file grows, by message id (every line
    written while a message is processed carries it: LogContext)."""

    path: Path
    by_message: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _offset: int = 0
    _partial: str = ""

    def poll(self) -> None:
        with self.path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        text = self._partial + chunk.decode(errors="replace")
        lines = text.split("\n")
        self._partial = lines.pop()
        decoder = json.JSONDecoder()
        for line in lines:
            position = 0  # two processes share the file: a line may hold two records
            while (start := line.find("{", position)) >= 0:
                try:
                    record, position = decoder.raw_decode(line, start)
                except json.JSONDecodeError:
                    break
                message_id = record.get("message_id") if isinstance(record, dict) else None
                if isinstance(message_id, str):
                    self.by_message.setdefault(message_id, []).append(record)

    def find(self, message_id: str, event: str) -> dict[str, Any] | None:
        for record in self.by_message.get(message_id, ()):
            if record.get("event") == event:
                return record
        return None

    def wait_for(self, message_id: str, event: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (record := self.find(message_id, event)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no '{event}' for message {message_id}; see {self.path}")
            time.sleep(0.02)
            self.poll()
        return record


def stamp(record: dict[str, Any]) -> float:
    """A log record's time (its ISO UTC timestamp) as seconds since the epoch."""
    from datetime import datetime

    return datetime.fromisoformat(record["timestamp"]).timestamp()


def provider_seconds(metrics_dir: Path) -> float:
    """Model request time the workers have recorded so far, all processes, all models
    (emotionviz_provider_request_seconds, measured around the SDK call)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    total = 0.0
    for metric in registry.collect():
        if metric.name == "emotionviz_provider_request_seconds":
            total += sum(s.value for s in metric.samples if s.name.endswith("_sum"))
    return total


def redis_cpu_seconds(client: redis.Redis) -> float:
    info: Any = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class CostProbe(MessageV1):
    """A message for a queue nobody consumes: what enqueuing costs."""

    actor_name: ClassVar[str] = "bench.enqueue_cost"
    queue_name: ClassVar[str] = "bench_enqueue_cost"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
