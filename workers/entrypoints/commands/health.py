"""``emotionviz health``: the container health check. Exit 0 when the checks of
workers/observability/readiness.py pass (database, schema at head, broker); with
``--worker``, also this container's worker: its /healthz (every consumer and worker
thread alive). Else exit 1 with one line naming what failed."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from dataclasses import asdict

from workers.observability.readiness import Check, run_checks
from workers.settings import Settings


def _answers(name: str, port: int, timeout_s: float, dead: str) -> Check:
    """This machine's own server on ``port``: its /healthz answers 200."""
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return Check(name, True, f"/healthz answered {response.status}")
    except urllib.error.HTTPError as exc:
        return Check(name, False, f"/healthz answered {exc.code}: {dead}")
    except (urllib.error.URLError, OSError) as exc:
        return Check(name, False, f"no /healthz on port {port}: {exc}")


def check_console(settings: Settings, timeout_s: float) -> Check:
    """The console of this container (it needs no database to answer)."""
    return _answers("console", settings.console_port, timeout_s, "the console is unwell")


def check_worker(settings: Settings, timeout_s: float) -> Check:
    """The worker of this container: every consumer and worker thread alive."""
    if not settings.metrics_port:
        return Check("worker", False, "METRICS_PORT is 0: the worker serves no /healthz")
    return _answers("worker", settings.metrics_port, timeout_s, "a worker thread died")


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    if args.console:  # the console's own liveness; it reports the rest on its pages
        checks = [check_console(settings, args.timeout)]
    else:
        checks = run_checks(settings, args.timeout)
    if args.worker:
        checks.append(check_worker(settings, args.timeout))
    healthy = all(c.ok for c in checks)
    if args.json:
        document = {"ok": healthy, "checks": [asdict(c) for c in checks]}
        sys.stdout.write(json.dumps(document) + "\n")
    elif healthy:
        sys.stdout.write("healthy: " + "; ".join(f"{c.name} {c.detail}" for c in checks) + "\n")
    else:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok)
        sys.stderr.write(f"emotionviz health: {failed}\n")
    return 0 if healthy else 1
