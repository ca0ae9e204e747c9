"""An entry's unavoidable work, alone: the two SDK calls as our providers make them (no
rate limiter), the image check (full decode) and the WebP thumbnail. No database, no
broker, no Dramatiq. bench_cost measures its CPU on one thread; bench_scale runs it on
as many threads as the workers would have (``python floor.py``, below), which bounds
what any threaded implementation could reach on this machine, or (``--asyncio``) as
that many tasks on one event loop through the SDK's async client: the bound of an
async provider, or (``--db URL``) with each entry's three writes added: the fair claim,
the analysis checkpoint and the completion, each its own statement on the thread's own
connection, as the workers write them (no ledger rows, no picture file, no analytics
refresh, no broker): the bound of any implementation that writes an entry's steps one
statement each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx2
import psycopg
from google import genai

from db.repositories.entry_pipeline import EntryPipelineRepository
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

# Connections per process with --db: the workers' DB_POOL_SIZE in the benchmarks.
POOL_SIZE = 20

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

    def run_with_writes(self, pool: _Pool, entry: tuple[str, str]) -> None:
        """One entry with its three writes, each on a connection of ``pool`` for its
        statement (as a unit of work checks one out): the fair claim (maybe another
        person's entry, as the workers'), the checkpoint, the completion."""
        with pool.pipeline() as pipeline:
            taken = pipeline.fair_claim(
                uuid.UUID(entry[0]), uuid.UUID(entry[1]), None, 300, 0
            ).taken
        if taken is None:
            raise RuntimeError(f"the floor could not claim entry {entry[0]}")
        row, claim = taken
        analysis = self.analysis.analyse(row.snapshot, self.style).analysis
        with pool.pipeline() as pipeline:
            pipeline.checkpoint_analysis(
                claim,
                summary=analysis.summary,
                insights=list(analysis.insights),
                visual_elements=analysis.visual_elements.model_dump(mode="json"),
                raw={"analysis": analysis.model_dump(mode="json")},
            )
        drawn = self.images.draw(row.snapshot, analysis, self.style)
        image = check_image(drawn.data, max_bytes=20 * 2**20, max_pixels=4096 * 4096)
        thumbnail(image.data, 256)
        with pool.pipeline() as pipeline:
            done = pipeline.complete(
                claim,
                user_id=row.user_id,
                entry_moment=row.created_at,
                image_url="floor://image",
                thumbnail_url="floor://thumbnail",
                nanobanana_response={"width": image.width, "height": image.height},
            )
        if not done:
            raise RuntimeError(f"the floor lost the lease of entry {row.snapshot.entry_id}")


class _Pool:
    """``size`` autocommit connections shared by a process's threads (the workers' pool
    has DB_POOL_SIZE: bench/common.py's base_env)."""

    def __init__(self, db: str, size: int) -> None:
        self._idle: queue.Queue[psycopg.Connection[Any]] = queue.Queue()
        for _ in range(size):
            self._idle.put(psycopg.connect(db, autocommit=True))

    @contextmanager
    def pipeline(self) -> Iterator[EntryPipelineRepository]:
        conn = self._idle.get()
        try:
            yield EntryPipelineRepository(conn)
        finally:
            self._idle.put(conn)


def run_threads(
    url: str,
    entries: int,
    threads: int,
    start: threading.Event,
    db: str | None = None,
    share: tuple[int, int] = (0, 1),
) -> _Pool | None:
    """``entries`` floor entries on ``threads`` threads taking them from one counter,
    each thread with its own connections (as a worker thread has), after ``start``.
    ``db``: the entries of that database (``share``: this process's k of n), each
    with its three writes."""
    floor = FloorEntry(url)
    floor.run()  # imports and the SDK's lazy parts, before the clock
    remaining = [entries]
    lock = threading.Lock()
    todo = _entries_of_share(db, share) if db else []
    connections = _Pool(db, POOL_SIZE) if db else None
    failures: list[BaseException] = []

    def work() -> None:
        start.wait()
        while True:
            with lock:
                if remaining[0] == 0 or failures:
                    return
                remaining[0] -= 1
                entry = todo.pop() if todo else None
            try:
                if connections is not None and entry is not None:
                    floor.run_with_writes(connections, entry)
                else:
                    floor.run()
            except Exception as exc:  # the run is void: say so, stop the others
                failures.append(exc)
                raise

    threads_ = [threading.Thread(target=work) for _ in range(threads)]
    for thread in threads_:
        thread.start()
    print("ready", _cpu_so_far(), flush=True)
    for thread in threads_:
        thread.join()
    if failures:
        raise SystemExit(f"failed: {failures[0]}")
    return connections  # open until the caller lets go: the server's CPU is read first


def _entries_of_share(db: str, share: tuple[int, int]) -> list[tuple[str, str]]:
    """Share ``k`` of ``n`` of the database's entries (id, person): every n-th by id."""
    k, n = share
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT id, user_id FROM emotion_entries ORDER BY id").fetchall()
    return [(str(a), str(b)) for a, b in rows[k::n]]


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
    db: str | None = None,
    on_ready: Callable[[], None] | None = None,
    on_done: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """``entries`` floor entries over ``processes`` processes x ``threads`` threads (or
    tasks), started together once every process has warmed up: the wall seconds and
    the processes' CPU seconds from the start. ``cpu_affinity`` "spread": each process
    on its share of the CPUs, as the workers with WORKER_CPU_AFFINITY=spread. ``db``
    (a libpq URL): the entries of that database, each with its three writes.
    ``on_ready`` is called when all have warmed up (their connections open), before the
    start; ``on_done`` when all are done, before they exit."""
    command = [sys.executable, __file__, "--url", url, "--threads", str(threads)]
    command += ["--entries", str(entries // processes)]
    command += ["--asyncio"] if use_asyncio else []
    command += ["--db", db] if db else []
    allowed = list(os.sched_getaffinity(0))
    procs = []
    for rank in range(processes):
        cpus = cpu_share(allowed, rank, processes) if cpu_affinity == "spread" else set()
        pinning = ["--cpus", ",".join(map(str, sorted(cpus)))] if cpus else []
        share = ["--share", f"{rank}/{processes}"]
        procs.append(
            subprocess.Popen(
                command + pinning + share,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
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
        if on_ready is not None:
            on_ready()
        started = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            word, _, seconds = proc.stdout.readline().partition(" ")
            if word != "done":
                raise RuntimeError("a floor process failed (its error is above)")
            cpu += float(seconds)
        elapsed = time.perf_counter() - started
        if on_done is not None:
            on_done()  # the processes (and their connections) are still there
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()  # a process with --db waits for this to exit
            proc.wait()
        return elapsed, cpu
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
    parser.add_argument("--db", help="libpq URL: each entry with its three writes")
    parser.add_argument("--share", default="0/1", help="k/n: this process's share of --db")
    args = parser.parse_args()
    if args.cpus:  # before any thread starts: they all inherit it
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})
    if args.asyncio:
        asyncio.run(run_tasks(args.url, args.entries, args.threads))
        print("done", _cpu_so_far(), flush=True)
        return 0
    start = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), start.set()), daemon=True).start()
    k, _, n = args.share.partition("/")
    connections = run_threads(
        args.url, args.entries, args.threads, start, args.db, (int(k), int(n))
    )
    print("done", _cpu_so_far(), flush=True)
    if connections is not None:  # open until the parent has read the server's CPU
        sys.stdin.readline()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
