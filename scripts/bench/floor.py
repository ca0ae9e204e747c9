"""An entry's unavoidable work, alone: the two SDK calls as our providers make them (no
rate limiter), the image check (full decode) and the WebP thumbnail. No database, no
broker, no Dramatiq. bench_cost measures its CPU on one thread; bench_scale runs it on
as many threads as the workers would have (``python floor.py``, below), which bounds
what any threaded implementation could reach on this machine, or (``--asyncio``) as
that many tasks on one event loop through the SDK's async client: the bound of an
async provider.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx2
from google import genai

from domain.analysis import EntrySnapshot, analysis_prompt, image_prompt
from domain.vocabulary import VisualizationStyle
from workers.entrypoints.cpu_affinity import AffinityMode, cpu_share
from workers.providers.gemini import (
    FIRST_TOKENS,
    GeminiAnalysisProvider,
    GeminiClient,
    GeminiImageProvider,
    text_turn,
)
from workers.services.imaging import check_image, thumbnail

PARTS = ("SDK analysis call", "SDK image call", "image check (decode)", "thumbnail")


class _NoGate:
    """The floor has no rate limiter."""

    def slot(self) -> Any:
        return nullcontext()


class FloorEntry:
    """The floor's work for one entry against the emulator at ``url``."""

    def __init__(self, url: str) -> None:
        client = GeminiClient(api_key="bench-key", base_url=url, api_version="v1beta", timeout_s=60)
        gate: Any = _NoGate()
        self.analysis = GeminiAnalysisProvider(client, "gemini-3.5-flash", gate)
        self.images = GeminiImageProvider(
            client, "gemini-3.1-flash-image", gate, aspect_ratio="1:1", image_size="1K"
        )
        self.entry = EntrySnapshot(
            entry_id="00000000-0000-4000-8000-000000000001",
            situation="Benchmark situation: a long day, a kind word at the end of it.",
            emotions=("joy", "anxiety"),
            intensity=Decimal("0.6"),
            notes=None,
        )
        self.style = VisualizationStyle.ABSTRACT

    def run(self) -> tuple[float, float, float, float]:
        """Do one entry; the thread CPU seconds of each of PARTS."""
        t0 = time.thread_time()
        analysis = self.analysis.analyse(self.entry, self.style).analysis
        t1 = time.thread_time()
        drawn = self.images.draw(self.entry, analysis, self.style)
        t2 = time.thread_time()
        image = check_image(drawn.data, max_bytes=20 * 2**20, max_pixels=4096 * 4096)
        t3 = time.thread_time()
        thumbnail(image.data, 256)
        t4 = time.thread_time()
        return t1 - t0, t2 - t1, t3 - t2, t4 - t3


def run_threads(url: str, entries: int, threads: int, start: threading.Event) -> None:
    """``entries`` floor entries on ``threads`` threads taking them from one counter,
    each thread with its own connections (as a worker thread has), after ``start``."""
    floor = FloorEntry(url)
    floor.run()  # imports and the SDK's lazy parts, before the clock
    remaining = [entries]
    lock = threading.Lock()

    def work() -> None:
        start.wait()
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            floor.run()

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    print("ready", _cpu_so_far(), flush=True)
    for thread in pool:
        thread.join()


async def run_tasks(url: str, entries: int, tasks: int) -> None:
    """The same work as tasks on this thread's event loop, the SDK's async client with
    one pool (as an async provider would have), after a line on stdin."""
    floor = FloorEntry(url)
    limits = httpx2.Limits(max_connections=tasks * 2, max_keepalive_connections=tasks * 2)
    options = genai.types.HttpOptions(
        base_url=url, api_version="v1beta", timeout=60_000, async_client_args={"limits": limits}
    )
    models = genai.Client(api_key="bench-key", http_options=options).aio.models

    async def one() -> None:  # what FloorEntry.run does, through the async client
        prompt = [text_turn("user", analysis_prompt(floor.entry, floor.style))]
        answer = await models.generate_content(
            model=floor.analysis.model,
            contents=prompt,
            config=floor.analysis.config(FIRST_TOKENS),
        )
        analysis = floor.analysis.parse(answer).analysis
        drawn = await models.generate_content(
            model=floor.images.model,
            contents=image_prompt(analysis, floor.style),
            config=floor.images.config,
        )
        image = check_image(
            floor.images.parse(drawn).data, max_bytes=20 * 2**20, max_pixels=4096 * 4096
        )
        thumbnail(image.data, 256)

    await one()  # the SDK's lazy parts, before the clock
    print("ready", _cpu_so_far(), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    remaining = [entries]

    async def task() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            await one()

    await asyncio.gather(*(task() for _ in range(tasks)))


def run_processes(
    url: str,
    processes: int,
    threads: int,
    entries: int,
    *,
    use_asyncio: bool = False,
    cpu_affinity: AffinityMode = "none",
) -> tuple[float, float]:
    """``entries`` floor entries over ``processes`` processes x ``threads`` threads (or
    tasks), started together once every process has warmed up: the wall seconds and
    the processes' CPU seconds from the start. ``cpu_affinity`` "spread": each process
    on its share of the CPUs, as the workers with WORKER_CPU_AFFINITY=spread."""
    command = [sys.executable, __file__, "--url", url, "--threads", str(threads)]
    command += ["--entries", str(entries // processes)]
    command += ["--asyncio"] if use_asyncio else []
    allowed = list(os.sched_getaffinity(0))
    procs = []
    for rank in range(processes):
        cpus = cpu_share(allowed, rank, processes) if cpu_affinity == "spread" else set()
        pinning = ["--cpus", ",".join(map(str, sorted(cpus)))] if cpus else []
        procs.append(
            subprocess.Popen(
                command + pinning, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        )
    try:
        cpu = 0.0
        for proc in procs:
            assert proc.stdout is not None
            word, _, seconds = proc.stdout.readline().partition(" ")
            if word != "ready":
                raise RuntimeError("a floor process did not start")
            cpu -= float(seconds)
        started = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            cpu += float(proc.stdout.readline().split()[1])
            proc.wait()
        return time.perf_counter() - started, cpu
    finally:
        for proc in procs:
            proc.kill()


def _cpu_so_far() -> str:
    times = os.times()
    return f"{times.user + times.system:.3f}"


def main() -> int:
    """One process of the floor pipeline: prints 'ready', starts on a line on stdin."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--entries", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True, help="threads, or tasks")
    parser.add_argument("--asyncio", action="store_true", help="tasks on one event loop")
    parser.add_argument("--cpus", help="keep this process on these CPUs (comma-separated)")
    args = parser.parse_args()
    if args.cpus:  # before any thread starts: they all inherit it
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})
    if args.asyncio:
        asyncio.run(run_tasks(args.url, args.entries, args.threads))
        print("done", _cpu_so_far(), flush=True)
        return 0
    start = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), start.set()), daemon=True).start()
    run_threads(args.url, args.entries, args.threads, start)
    print("done", _cpu_so_far(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
