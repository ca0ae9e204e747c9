"""``emotionviz demo``: the main job, end to end, on real parts.

Starts the embedded services (unless URLs are given), migrates, seeds sample people and
entries, publishes entry.created for each, runs real worker processes until every
entry is completed or failed (with a progress bar), prints a summary, and writes an
HTML gallery. ``--provider emulator`` runs the real Gemini provider (google-genai SDK)
against the local emulator, with a few injected faults to show the retries.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from db import migrate
from db.seed import seed_dev_data
from domain.messages import EntryCreated
from domain.vocabulary import VisualizationStyle
from workers import bootstrap
from workers.devtools.demo_intake import ScriptedRespondent
from workers.devtools.gallery import write_gallery
from workers.entrypoints.commands.worker import worker_command, worker_env
from workers.producer_api import ProducerAPI
from workers.settings import Settings

# How long the demo waits for the workers to refresh the last entries' analytics.
ANALYTICS_WAIT_S = 10.0
STYLES = list(VisualizationStyle)
EMULATOR_FAULTS = [
    {"kind": "503", "target": "image", "times": 2},
    {"kind": "429", "target": "analysis", "times": 1, "seconds": 1},
    {"kind": "500", "target": "analysis", "times": 1},
]


def _post(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def _reset_demo_rows() -> None:
    with bootstrap.unit_of_work() as uow:
        uow.showcase.clear_visualizations_and_analytics()
        uow.commit()
    # The deleted rows' pictures go too (a re-run must not pile up files).
    bootstrap.media_lifecycle().collect_garbage(limit=100_000)


def _entries() -> list[tuple[uuid.UUID, uuid.UUID]]:
    with bootstrap.unit_of_work() as uow:
        return uow.showcase.entry_ids_oldest_first()


def _counts() -> dict[str, int]:
    with bootstrap.unit_of_work() as uow:
        return uow.visualizations.status_counts()


def _complete(session_ids: list[uuid.UUID]) -> int:
    with bootstrap.unit_of_work() as uow:
        return uow.showcase.complete_intakes(session_ids)


def _timings() -> tuple[float, float]:
    with bootstrap.unit_of_work() as uow:
        return uow.showcase.completion_seconds()


def run(args: argparse.Namespace, settings: Settings) -> int:
    console = Console()
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    env = worker_env(settings)  # starts the embedded services when no URLs are set
    console.print(f"[bold]database[/] {bootstrap.redact_url(env['DATABASE_URL'])}")
    console.print(f"[bold]broker[/]   {bootstrap.redact_url(env['REDIS_URL'])}")
    migrate.upgrade(env["DATABASE_URL"])
    report = seed_dev_data(bootstrap.unit_of_work())
    console.print(f"seeded {report.users_created} people and {report.entries_created} entries")
    if not args.keep:
        _reset_demo_rows()

    emulator = None
    env.update(
        {
            "MIN_BACKOFF_MS": env.get("MIN_BACKOFF_MS", "300"),
            "MAX_BACKOFF_MS": env.get("MAX_BACKOFF_MS", "3000"),
        }
    )
    if args.provider == "emulator":
        from workers.devtools.emulator import EmulatorState, start_in_thread

        emulator = start_in_thread(
            EmulatorState(api_key="emulator-key", latency_analysis_s=0.2, latency_image_s=0.6)
        )
        _post(f"{emulator.url}/_emulator/faults", {"faults": EMULATOR_FAULTS})
        env.update(
            {
                "PROVIDER": "gemini",
                "GEMINI_API_KEY": "emulator-key",
                "GEMINI_BASE_URL": emulator.url,
            }
        )
        console.print(
            f"provider gemini (google-genai SDK) -> emulator at {emulator.url}, "
            f"{len(EMULATOR_FAULTS)} transient faults injected"
        )
    else:
        env["PROVIDER"] = "local"
        console.print("provider local (offline analysis and Pillow renderer)")
    if settings.media_url is None:  # the demo's default: this machine's folder
        env["MEDIA_DIR"] = str(settings.media_dir.resolve())
    console.print(f"[bold]pictures[/] {bootstrap.image_store().describe()}")

    bootstrap.counters().reset(["retries", "rejected"])
    respondent = ScriptedRespondent(ProducerAPI(bootstrap.unit_of_work))
    respondent.reset()
    entries = _entries()
    with bootstrap.unit_of_work() as uow:
        for i, (entry_id, user_id) in enumerate(entries):
            uow.publish(
                EntryCreated(entry_id=entry_id, user_id=user_id, style=STYLES[i % len(STYLES)])
            )
        uow.commit()
    console.print(f"published {len(entries)} entry.created messages")
    sessions = respondent.start()
    console.print(
        f"started {len(sessions)} intake conversations, answered by a scripted respondent"
    )
    stop = threading.Event()
    answering = threading.Thread(target=respondent.run, args=(stop,), daemon=True)
    answering.start()

    log_path = output / "worker.log"
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(
            worker_command(settings, processes=args.processes, threads=args.threads, queues=None),
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            # Each conversation ends in one more entry to visualize.
            finished = _wait(console, len(entries) + len(sessions), worker, args.timeout)
            if finished:  # the workers' refresher brings the analytics a second later
                _wait_for_analytics(ANALYTICS_WAIT_S)
        finally:
            stop.set()
            answering.join(timeout=5)
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
    if emulator is not None:
        emulator.shutdown()

    # Whatever the workers had not refreshed yet (a slow machine), so the gallery's
    # charts count every entry.
    bootstrap.drain_analytics_refreshes(100_000)
    counts = _counts()
    conversations_done = _complete(sessions)
    average, p95 = _timings()
    wall = time.monotonic() - started
    table = Table(title="demo summary")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for status in ("completed", "failed", "pending", "processing"):
        table.add_row(f"visualizations {status}", str(counts.get(status, 0)))
    table.add_row("intake conversations complete", f"{conversations_done} / {len(sessions)}")
    table.add_row("intake answers given by the respondent", str(respondent.answered))
    table.add_row(
        "retries (transient failures)", str(bootstrap.counters().read(["retries"])["retries"])
    )
    table.add_row("seconds per entry, publish to done (avg / p95)", f"{average:.2f} / {p95:.2f}")
    table.add_row("wall time, whole demo (s)", f"{wall:.1f}")
    console.print(table)

    index = write_gallery(bootstrap.unit_of_work(), bootstrap.image_store(), output / "gallery")
    console.print(f"gallery written: [bold]{index}[/]")
    console.print(f"worker log: {log_path}")
    _print_next_steps(console, settings)
    if respondent.error:
        console.print(f"[red]the scripted respondent stopped: {respondent.error}[/]")
    if not finished:
        console.print("[red]not every entry finished before the timeout[/]")
        return 1
    return 0 if conversations_done == len(sessions) else 1


def _print_next_steps(console: Console, settings: Settings) -> None:
    """Which servers the demo left running, and how to look further or stop them."""
    embedded = [
        name
        for name, url in (("PostgreSQL", settings.database_url), ("Redis", settings.redis_url))
        if url is None
    ]
    if embedded:
        console.print(
            f"left running: the embedded {' and '.join(embedded)} in {settings.data_dir} "
            "(the data stays); stop them with: [bold]scripts/emotionviz services stop[/]"
        )
    else:
        console.print("no server was started: DATABASE_URL and REDIS_URL point at yours")
    console.print(
        "look around: [bold]scripts/emotionviz status[/], "
        "[bold]scripts/emotionviz job ENTRY_ID[/], [bold]scripts/emotionviz dlq list[/]"
    )
    console.print(
        "open the web console: [bold]scripts/emotionviz console[/] (serves "
        f"http://{settings.console_host}:{settings.console_port}/ and prints its sign-in link; "
        "Ctrl-C stops it)"
    )


def _wait_for_analytics(timeout: float) -> None:
    """Until the analytics refresh queue is empty (the workers drain it each second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with bootstrap.unit_of_work() as uow:
            if uow.analytics.refresh_backlog().queued == 0:
                return
        time.sleep(0.25)


def _wait(console: Console, total: int, worker: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("visualizing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("entries", total=total, failed=0)
        while time.monotonic() < deadline:
            counts = _counts()
            done = counts.get("completed", 0) + counts.get("failed", 0)
            progress.update(task, completed=done, failed=counts.get("failed", 0))
            if done >= total:
                return True
            if worker.poll() is not None:
                console.print(f"[red]worker exited with code {worker.returncode}[/]")
                return False
            time.sleep(0.25)
    return False
