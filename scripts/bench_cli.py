"""How long the operator waits for ``emotionviz`` (issue 24, item 7).

Times each command as a real process (``python -m workers.entrypoints.cli``, what the
``emotionviz`` script runs) beside the bare interpreter (``python -c pass``): one
untimed run each first (a warm disk cache), then the median wall time of ``--runs``
runs, printed in seconds and as a ratio to the bare interpreter. The commands that
read (``status``, ``job``) run against an idle deployment: a freshly migrated
database with one entry on the configured server (DATABASE_URL, else the embedded
one) and a Redis namespace of its own, both removed afterwards.

Targets: ``emotionviz --help`` and a command's ``--help`` <= 0.3 s; ``status`` and
``job`` <= 0.8 s. ``--importtime CMD...`` prints instead the slowest imports of one
command (``python -X importtime``, cumulative), to find what makes it slow.

Usage:
  .venv/bin/python scripts/bench_cli.py [--runs 7] [--json FILE] [--against DIR]
  (DIR: another checkout, e.g. `git worktree add /tmp/before REV`: its code timed too,
  interleaved with this one's)
  .venv/bin/python scripts/bench_cli.py [--top 25] --importtime job ENTRY_ID  (last: the rest
  is the command; ENTRY_ID stands for the idle deployment's entry)
  (exit 0: every target met; 1: one was not)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
sys.path.insert(0, str(ROOT))  # this checkout's code, not an installed copy

CLI = [sys.executable, "-m", "workers.entrypoints.cli"]
HELP_TARGET_S = 0.3
READ_TARGET_S = 0.8


@dataclass
class Row:
    name: str
    argv: list[str]
    median_s: float
    ratio: float
    target_s: float | None
    exit_codes: list[int]

    @property
    def met(self) -> bool | None:
        return None if self.target_s is None else self.median_s <= self.target_s


def _run_once(argv: Sequence[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=120)
    return time.perf_counter() - started, done.returncode


@contextmanager
def idle_deployment() -> Iterator[tuple[dict[str, str], str]]:
    """(environment, an entry id) of a migrated database holding one entry and an
    empty Redis namespace; both removed afterwards."""
    import redis
    from common import bench_database, entry_ids, make_entries

    from workers import bootstrap
    from workers.settings import get_settings

    redis_url = bootstrap.redis_url(get_settings())
    namespace = f"bench-cli-{uuid.uuid4().hex[:8]}"
    with bench_database() as url:
        make_entries(url, 1, users=1)
        [(entry_id, _user)] = entry_ids(url)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "REDIS_NAMESPACE": namespace,
            "PROVIDER": "local",
        }
        try:
            yield env, entry_id
        finally:
            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=f"{namespace}*"))
            if keys:
                client.delete(*keys)


def measure(runs: int, against: Path | None = None) -> list[Row]:
    """Round-robin: run r of every command, then run r + 1, so a burst of other work on
    the machine falls on all of them alike (and the ratio to the bare interpreter holds).
    ``against``: another checkout (``git worktree add DIR REV``) whose code runs each
    command too, interleaved, as "(against)" rows without a target: before and after
    in one run."""
    with idle_deployment() as (env, entry_id):
        cases: list[tuple[str, list[str], float | None]] = [
            ("python -c pass", ["-c", "pass"], None),
            ("emotionviz --help", ["--help"], HELP_TARGET_S),
            ("emotionviz job --help", ["job", "--help"], HELP_TARGET_S),
            ("emotionviz dlq list --help", ["dlq", "list", "--help"], HELP_TARGET_S),
            ("emotionviz status", ["status"], READ_TARGET_S),
            ("emotionviz status --json", ["status", "--json"], READ_TARGET_S),
            ("emotionviz job ENTRY_ID", ["job", entry_id], READ_TARGET_S),
        ]
        if against is not None:
            cases += [(f"{n} (against)", a, None) for n, a, t in cases if t is not None]
        times: dict[str, list[float]] = {name: [] for name, _argv, _target in cases}
        codes: dict[str, list[int]] = {name: [] for name, _argv, _target in cases}
        for i in range(runs + 1):
            for name, argv, _target in cases:
                command = [sys.executable, *argv] if target_is_bare(name) else [*CLI, *argv]
                cwd = against if against is not None and name.endswith("(against)") else ROOT
                elapsed, code = _run_once(command, env, cwd)
                if i:  # the first round warms the disk cache (and starts nothing twice)
                    times[name].append(elapsed)
                    codes[name].append(code)
    bare = statistics.median(times["python -c pass"])
    return [
        Row(
            name,
            argv,
            statistics.median(times[name]),
            statistics.median(times[name]) / bare,
            target,
            codes[name] if target is not None else [],
        )
        for name, argv, target in cases
    ]


def target_is_bare(name: str) -> bool:
    return name.startswith("python ")


def import_profile(argv: Sequence[str], top: int) -> None:
    """The slowest imports of one command, by cumulative time (-X importtime), run
    against the idle deployment (the word ENTRY_ID stands for its entry's id)."""
    with idle_deployment() as (env, entry_id):
        argv = [entry_id if part == "ENTRY_ID" else part for part in argv]
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-X", "importtime", *CLI[1:], *argv],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        wall = time.perf_counter() - started
    found = []  # (cumulative us, self us, name as printed: indented by depth)
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_part, cumulative_part, name = line.removeprefix("import time:").split("|")
        found.append((int(cumulative_part), int(self_part), name.rstrip()[1:]))
    total = sum(c for c, _s, name in found if not name.startswith(" "))
    print(f"emotionviz {' '.join(argv)}: exit {done.returncode}, {len(found)} modules imported")
    print(f"{'cumulative ms':>14} {'self ms':>8}  module")
    for cumulative, self_us, name in sorted(found, reverse=True)[:top]:
        print(f"{cumulative / 1000:14.1f} {self_us / 1000:8.1f}  {name}")
    print(f"top-level imports: {total / 1000:.0f} ms in all")
    # The split of this one run: imports (as -X importtime counts them, its own overhead
    # included) and the rest (interpreter start, the command's connections and reads).
    print(
        f"this run: {wall * 1000:.0f} ms wall = {total / 1000:.0f} ms imports"
        f" + {(wall * 1e6 - total) / 1000:.0f} ms the rest (interpreter start, the work)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command (median)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows here")
    parser.add_argument(
        "--importtime", nargs=argparse.REMAINDER, metavar="CMD", help="profile one command"
    )
    parser.add_argument("--top", type=int, default=25, help="with --importtime: rows shown")
    parser.add_argument(
        "--against", type=Path, metavar="DIR", help="also time another checkout's code"
    )
    args = parser.parse_args()
    if args.importtime is not None:
        import_profile(args.importtime, args.top)
        return 0
    rows = measure(args.runs, args.against)
    print(f"{'command':36} {'median s':>9} {'x bare':>7} {'target s':>9}  met  exits")
    for row in rows:
        met = {None: "-", True: "yes", False: "NO"}[row.met]
        target = "-" if row.target_s is None else f"{row.target_s:.1f}"
        codes = ",".join(str(c) for c in sorted(set(row.exit_codes))) or "-"
        print(f"{row.name:36} {row.median_s:9.3f} {row.ratio:7.1f} {target:>9}  {met:4} {codes}")
    load = os.getloadavg()
    print(f"{args.runs} runs each (median), load average {load[0]:.2f} {load[1]:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps([{**asdict(r), "met": r.met} for r in rows], indent=2) + "\n"
        )
    return 0 if all(row.met is not False for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
