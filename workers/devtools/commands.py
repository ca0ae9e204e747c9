"""The development tools' commands: demo, emulator, schemas. The CLI registers them;
the tools themselves are imported only when a command runs (so this module imports
nothing heavy: the CLI's ``--help`` reads it)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI builds its parser from register() below: nothing heavy here
    from workers.settings import Settings


def cmd_emulator(args: argparse.Namespace, settings: Settings) -> int:
    from workers.devtools.emulator import EmulatorServer, EmulatorState

    state = EmulatorState(
        api_key=args.api_key,
        latency_analysis_s=args.analysis_latency,
        latency_image_s=args.image_latency,
        quota_per_minute=args.quota,
        quota_image_per_minute=args.image_quota,
        quota_analysis_per_minute=args.analysis_quota,
    )
    server = EmulatorServer((args.host, args.port), state)
    sys.stdout.write(
        f"Gemini emulator listening on {server.url} (key {args.api_key!r}); "
        f"set GEMINI_BASE_URL={server.url}\n"
    )
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from workers.devtools.schemas_export import write_schemas

    written = write_schemas(Path(args.output))
    for path in written:
        sys.stdout.write(f"wrote {path}\n")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from workers.devtools.demo import run

    return run(args, settings)


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("emulator", cmd_emulator, "run the Gemini API emulator (demos, load tests)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--api-key", default="emulator-key")
    p.add_argument("--analysis-latency", type=float, default=0.0, metavar="S")
    p.add_argument("--image-latency", type=float, default=0.0, metavar="S")
    p.add_argument(
        "--quota", type=int, default=0, help="requests per minute, all calls; 0 = unlimited"
    )
    p.add_argument(
        "--image-quota", type=int, default=0, help="image requests per minute; 0 = unlimited"
    )
    p.add_argument(
        "--analysis-quota",
        type=int,
        default=0,
        help="analysis requests per minute; 0 = unlimited",
    )

    p = add("schemas", cmd_schemas, "write the messages' JSON Schemas (docs/messages)")
    p.add_argument("--output", default="docs/messages", help="directory (default docs/messages)")

    # Declared here, not in demo.py, which imports the whole product.
    p = add("demo", cmd_demo, "the main job: services, migrations, sample data, pipeline, gallery")
    p.add_argument(
        "--provider",
        choices=["local", "emulator"],
        default="local",
        help="local (offline, default) or the real gemini provider against the emulator",
    )
    p.add_argument("--output", default="demo-output", help="folder for the gallery and logs")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the workers")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep earlier visualizations (default: redraw every entry)",
    )
