"""CPU cost of tracing per entry: off (must be nothing) and on (issue 24.6).

The real VisualizationService (bootstrap's: gemini provider against the emulator,
PostgreSQL, Redis) runs entries one after the other in this process, each as a worker
handles it: the publish span and the context written into the message (what the
producer adds), the middleware's hooks (LogContext: the consumer span), the job (its
model-call and unit-of-work spans). Blocks of BLOCK entries alternate between three
modes, so the machine's drift falls on all of them alike:

- ``off``: what a process without OTEL_* variables runs,
- ``on``: an SDK TracerProvider, a BatchSpanProcessor and an exporter that drops the
  spans (what a real exporter costs on top is its serialization, in its own thread),
- ``off'``: off again, the same code as ``off``: the difference between the two is the
  run's noise, the yardstick for on - off.

Off against the code before tracing: scripts/bench_cost.py, with the figures of
docs/benchmarks.md (an off process runs a module-global read per span site).

Printed: CPU ms per entry of this thread (``time.thread_time``) and of the whole process
(``time.process_time``: the batch processor's thread too), the spans per entry, and the
difference on - off. It asserts nothing.

Usage: .venv/bin/python scripts/bench_tracing.py [--entries 600] [--block 25]
Uses DATABASE_URL / REDIS_URL when set, else the embedded servers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

from common import OUT, Emulator, base_env, bench_database, entry_ids, make_entries
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from domain.messages import EntryCreated
from workers import bootstrap
from workers.messaging.middleware import LogContext
from workers.messaging.producer import envelope
from workers.observability import tracing
from workers.settings import get_settings

WARM_UP = 20


class Dropping(SpanExporter):
    """Counts the spans and drops them."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def one_entry(service: Any, middleware: LogContext, message: EntryCreated) -> None:
    """What a worker does for one entry, minus the broker: publish, consume, the job."""
    opened = None
    options: dict[str, Any] = {}
    if tracing.tracer() is not None:  # exactly the producer's extra work
        opened, options = tracing.start_publish(
            message.actor_name, message.queue_name, {"entry_id": str(message.entry_id)}
        )
    sent = envelope(message, options)
    if opened is not None:
        tracing.end(opened, message_id=sent.message_id)
    middleware.before_process_message(None, sent)
    try:
        service.process(message)
    finally:
        middleware.after_process_message(None, sent)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=600)
    parser.add_argument("--block", type=int, default=25)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    print(f"machine: {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}")
    emulator = Emulator(0, 0)
    try:
        with bench_database() as db_url:
            env = {
                **base_env(db_url, f"bench-tracing-{os.getpid()}"),
                "PROVIDER": "gemini",
                "GEMINI_API_KEY": "bench-key",
                "GEMINI_BASE_URL": emulator.url,
            }
            make_entries(db_url, args.entries + WARM_UP)
            ids = entry_ids(db_url)
            os.environ.update(env)
            get_settings.cache_clear()
            bootstrap.configure_process()
            service = bootstrap.visualization_service()
            run(service, ids, args.block)
    finally:
        emulator.stop()
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    return 0


def run(service: Any, ids: list[tuple[str, str]], block: int) -> None:
    middleware = LogContext()
    provider = TracerProvider()
    exporter = Dropping()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    messages = [EntryCreated.model_validate({"entry_id": e, "user_id": u}) for e, u in ids]
    tracing.use(provider)
    for message in messages[:WARM_UP]:  # warm both paths: connections, caches, the SDK
        one_entry(service, middleware, message)
    tracing.use(None)
    modes = ("off", "on", "off'")
    thread: dict[str, list[float]] = {m: [] for m in modes}
    process: dict[str, list[float]] = {m: [] for m in modes}
    rest = messages[WARM_UP:]
    spans_warm, entries_on = exporter.spans, 0
    for number, start in enumerate(range(0, len(rest), block)):
        mode = modes[number % len(modes)]
        tracing.use(provider if mode == "on" else None)
        chunk = rest[start : start + block]
        t0, p0 = time.thread_time(), time.process_time()
        for message in chunk:
            one_entry(service, middleware, message)
        if mode == "on":
            provider.force_flush()  # the batch thread's work inside the block
            entries_on += len(chunk)
        thread[mode].append((time.thread_time() - t0) * 1000 / len(chunk))
        process[mode].append((time.process_time() - p0) * 1000 / len(chunk))
    tracing.use(None)
    provider.force_flush()
    spans = (exporter.spans - spans_warm) / max(entries_on, 1)
    provider.shutdown()
    print(f"\n{len(rest)} entries in blocks of {block}, alternating {' / '.join(modes)}")
    print(f"    {'mode':6s} {'blocks':>6s}   thread CPU ms/entry      process CPU ms/entry")
    for mode in modes:
        print(
            f"    {mode:6s} {len(thread[mode]):6d}   "
            f"median {statistics.median(thread[mode]):6.2f} mean {statistics.mean(thread[mode]):6.2f}   "
            f"median {statistics.median(process[mode]):6.2f} mean {statistics.mean(process[mode]):6.2f}"
        )
    print(f"    spans per entry (on): {spans:.1f}")
    for clock, figures in (("thread", thread), ("process", process)):
        off, on, again = (statistics.median(figures[m]) for m in modes)
        print(
            f"    {clock:7s}: on - off = {on - off:+.2f} ms per entry ({(on - off) / off * 100:+.1f} %);"
            f" noise: off' - off = {again - off:+.2f} ms ({(again - off) / off * 100:+.1f} %)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
