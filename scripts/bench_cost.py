"""CPU cost of one entry, split by part, next to its floor (issue 14, deliverable 2).
Prints figures measured in one run; it asserts nothing.

1. The floor, measured alone in this process, one thread, against the same emulator:
   the two SDK calls as our providers make them (analysis + image, no rate limiter),
   the image check (full decode) and the WebP thumbnail. CPU of this thread only.
2. The pipeline at zero provider latency: ENTRIES entries through real worker processes
   (gemini provider, SDK, emulator), CPU seconds of every process group read from /proc
   (workers, emulator, PostgreSQL, Redis), and the workers' CPU split by part from a
   py-spy sampling profile of every worker process: the thread holding the GIL, sampled
   RATE_HZ times a second; each sample goes to the innermost part its stack passes
   through (a log line written while the rate limiter waits counts as logging), and a
   part's share of the samples is its share of the workers' CPU. (Samples / RATE_HZ
   over-count CPU on a busy machine: a GIL holder the kernel has descheduled still
   holds it. The shares are what the profile can tell.)

The figure: worker CPU per entry / floor (target <= 1.5, moonshot <= 1.2). The servers'
CPU on our behalf (PostgreSQL, Redis) and the emulator's are printed beside it.

Usage: .venv/bin/python scripts/bench_cost.py [--entries 2000] [--processes 2]
       [--threads 16] [--floor-calls 200] [--no-profile]
Uses DATABASE_URL / REDIS_URL when set, else the embedded servers.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

import psutil
from common import (
    OUT,
    Emulator,
    Workers,
    base_env,
    bench_database,
    cpu_seconds,
    entry_ids,
    make_entries,
    server_processes,
    status_counts,
    visualize_and_wait,
)

from domain.analysis import EntrySnapshot
from domain.vocabulary import VisualizationStyle
from workers.providers.gemini import GeminiAnalysisProvider, GeminiClient, GeminiImageProvider
from workers.services.imaging import check_image, thumbnail

# (part, markers): a sample goes to the part of the innermost frame that contains one of
# its markers (a file path fragment), checked leaf first. Redis is shared by the broker,
# the rate limiter and the counters, so a Redis frame counts for its caller's part.
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("logging", ("structlog/", "workers/logging.py", "/logging/__init__.py")),
    ("metrics", ("prometheus_client/", "workers/observability/", "workers/messaging/counters")),
    ("rate limiter", ("workers/providers/ratelimit.py", "dramatiq/rate_limits/")),
    ("image check + thumbnail", ("workers/services/imaging.py", "PIL/")),
    ("media files", ("workers/providers/storage.py", "workers/services/media.py")),
    ("SDK calls", ("google/genai/", "httpx2/", "httpcore2/", "workers/providers/gemini")),
    ("SQL + transactions", ("sqlalchemy/", "psycopg/", "psycopg_pool/", "db/")),
    ("lease heartbeat", ("workers/services/leases.py",)),
    ("Dramatiq + broker", ("dramatiq/", "workers/messaging/")),
]
SHARED = ("redis/",)
RATE_HZ = 100


class _NoGate:
    """The floor has no rate limiter."""

    def slot(self) -> Any:
        return nullcontext()


def measure_floor(url: str, calls: int) -> dict[str, float]:
    """CPU ms per entry of this thread for the SDK calls, the check and the thumbnail."""
    client = GeminiClient(api_key="bench-key", base_url=url, api_version="v1beta", timeout_s=60)
    gate: Any = _NoGate()
    analysis_provider = GeminiAnalysisProvider(client, "gemini-3.5-flash", gate)
    image_provider = GeminiImageProvider(
        client, "gemini-3.1-flash-image", gate, aspect_ratio="1:1", image_size="1K"
    )
    entry = EntrySnapshot(
        entry_id="00000000-0000-4000-8000-000000000001",
        situation="Benchmark situation: a long day, a kind word at the end of it.",
        emotions=("joy", "anxiety"),
        intensity=Decimal("0.6"),
        notes=None,
    )
    style = VisualizationStyle.ABSTRACT
    totals: dict[str, float] = collections.defaultdict(float)
    for i in range(calls + 10):  # the first ten warm the connection and the caches
        t0 = time.thread_time()
        analysis = analysis_provider.analyse(entry, style).analysis
        t1 = time.thread_time()
        drawn = image_provider.draw(entry, analysis, style)
        t2 = time.thread_time()
        image = check_image(drawn.data, max_bytes=20 * 2**20, max_pixels=4096 * 4096)
        t3 = time.thread_time()
        thumbnail(image.data, 256)
        t4 = time.thread_time()
        if i >= 10:
            totals["SDK analysis call"] += t1 - t0
            totals["SDK image call"] += t2 - t1
            totals["image check (decode)"] += t3 - t2
            totals["thumbnail"] += t4 - t3
    return {k: v * 1000 / calls for k, v in totals.items()}


@contextmanager
def profiled(pids: list[int], enabled: bool) -> Any:
    """py-spy records each pid (on-CPU samples, raw collapsed stacks) while the block runs."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if not enabled or spy is None:
        if enabled:
            print("    (py-spy not installed: no split by part)")
        yield []
        return
    outputs = [OUT / f"cost-{pid}.txt" for pid in pids]
    procs = [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, out in zip(pids, outputs, strict=True)
    ]
    time.sleep(1.0)  # py-spy attaches
    try:
        yield outputs
    finally:
        for proc in procs:
            proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
        for proc in procs:
            proc.wait(timeout=60)


def split_by_part(outputs: list[Path]) -> dict[str, int]:
    counts: dict[str, int] = collections.Counter()
    for out in outputs:
        if not out.exists():
            continue
        for line in out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            counts[_part_of(stack.split(";"))] += int(n)
    return counts


def _part_of(frames: list[str]) -> str:
    shared = False
    for frame in reversed(frames):
        for part, markers in PARTS:
            if any(marker in frame for marker in markers):
                return part
        shared = shared or any(marker in frame for marker in SHARED)
    return "Dramatiq + broker" if shared else "other (our code, threads, runtime)"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--floor-calls", type=int, default=200)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    emulator = Emulator(0, 0)
    try:
        floor = measure_floor(emulator.url, args.floor_calls)
        floor_ms = sum(floor.values())
        print(f"\nfloor, one thread, {args.floor_calls} entries (CPU ms per entry)")
        for part, ms in floor.items():
            print(f"    {part:28s} {ms:7.2f} ms")
        print(f"    {'floor':28s} {floor_ms:7.2f} ms")
        with bench_database() as db_url:
            run_pipeline(args, db_url, emulator, floor_ms)
    finally:
        emulator.stop()
    return 0


def run_pipeline(
    args: argparse.Namespace, db_url: str, emulator: Emulator, floor_ms: float
) -> None:
    env = {
        **base_env(db_url, f"bench-cost-{os.getpid()}"),
        "PROVIDER": "gemini",
        "GEMINI_API_KEY": "bench-key",
        "GEMINI_BASE_URL": emulator.url,
    }
    make_entries(db_url, args.entries)
    ids = entry_ids(db_url)
    workers = Workers(env, args.processes, args.threads, ["visualizations"])
    try:
        kids = psutil.Process(workers.proc.pid).children(recursive=True)
        groups = {
            "workers": kids,
            "emulator": [psutil.Process(emulator.proc.pid)],
            "PostgreSQL": server_processes("postgres"),
            "Redis": server_processes("redis-server"),
        }
        before = {name: cpu_seconds(procs) for name, procs in groups.items()}
        with profiled([k.pid for k in kids], not args.no_profile) as outputs:
            started = time.perf_counter()
            visualize_and_wait(env, ids)
            elapsed = time.perf_counter() - started
            spent = {name: cpu_seconds(procs) - before[name] for name, procs in groups.items()}
    finally:
        workers.stop()
    counts = status_counts(db_url)
    n = args.entries
    per_entry = {name: s * 1000 / n for name, s in spent.items()}
    print(
        f"\npipeline at 0 ms latency: {n} entries, {args.processes} processes x "
        f"{args.threads} threads: {elapsed:.1f} s, {n / elapsed:.1f} entries/s, {counts}"
    )
    samples = split_by_part(outputs)
    total_samples = sum(samples.values())
    if total_samples:
        print(f"    worker CPU by part ({total_samples} samples of the GIL holder):")
        for part, count in sorted(samples.items(), key=lambda kv: -kv[1]):
            share = count / total_samples
            print(f"      {part:36s} {share * per_entry['workers']:7.2f} ms  {share * 100:5.1f} %")
    for name, ms in per_entry.items():
        print(f"    {name:36s} {ms:7.2f} ms per entry")
    ratio = per_entry["workers"] / floor_ms
    all_in = sum(per_entry.values()) - per_entry["emulator"]
    print(
        f"    worker CPU / floor = {per_entry['workers']:.2f} / {floor_ms:.2f} ms = {ratio:.2f} x "
        f"(target <= 1.5, moonshot <= 1.2); with PostgreSQL and Redis "
        f"{all_in:.2f} ms = {all_in / floor_ms:.2f} x"
    )


if __name__ == "__main__":
    raise SystemExit(main())
