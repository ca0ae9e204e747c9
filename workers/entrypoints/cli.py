"""``emotionviz``: the operator's command line. Each subcommand is a small function;
names are a contract (operators script against them), so add, never rename.

The parser is built from light declarations (commands/__init__.py is the registry);
a command's module, and with it SQLAlchemy, Dramatiq, the model SDK and the settings,
loads only once its command runs, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from workers.entrypoints.cli_contract import OneLineParser, fail_line
from workers.entrypoints.commands import Handler, Lazy, register_all

if TYPE_CHECKING:
    from workers.settings import Settings


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --- services, migrate, seed ---------------------------------------------------------


def cmd_services(args: argparse.Namespace, settings: Settings) -> int:
    from db import embedded
    from workers import bootstrap

    if args.action == "start":
        bootstrap.database_url(settings)
        bootstrap.redis_url(settings)
        for service in embedded.status(settings.data_dir):
            _out(
                f"{service.name:9} {'running' if service.running else 'STOPPED'}  {service.detail}"
            )
        if settings.database_url or settings.redis_url:
            _out("note: an explicit DATABASE_URL/REDIS_URL is set; that service is not embedded")
        return 0
    if args.action == "stop":
        pg = embedded.stop_postgres(settings.data_dir)
        rd = embedded.stop_redis(settings.data_dir)
        _out(f"postgres  {'stopped' if pg else 'was not running'}")
        _out(f"redis     {'stopped' if rd else 'was not running'}")
        return 0
    states = embedded.status(settings.data_dir)
    for service in states:
        _out(f"{service.name:9} {'running' if service.running else 'stopped'}  {service.detail}")
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from db import migrate
    from workers.bootstrap import database_direct_url

    url = database_direct_url(settings)  # a session of its own: never through a pooler
    if args.downgrade:
        migrate.downgrade(url, args.downgrade)
        _out(f"downgraded to {args.downgrade}")
    else:
        migrate.upgrade(url, args.revision)
        _out(f"database at {args.revision}")
    if args.check:
        migrate.check(url)
        _out("models and database schema match")
    return 0


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from db import migrate
    from db.seed import seed_dev_data
    from workers.bootstrap import database_direct_url, unit_of_work

    migrate.upgrade(database_direct_url(settings))
    report = seed_dev_data(unit_of_work())
    _out(f"seed: {report.users_created} users and {report.entries_created} entries created")
    return 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from db.backup import backup
    from workers.bootstrap import database_direct_url

    path = backup(database_direct_url(settings), Path(args.output))
    _out(f"backup written: {path} ({path.stat().st_size} bytes)")
    return 0


def _audit_restore(source: Path, clean: bool) -> None:
    """Into the operators' trail of the restored database (after the restore: a clean
    restore replaces the trail with the backup's). A backup from before the trail
    existed (migration 0009) cannot hold it: said on stderr, the restore stands."""
    from domain.errors import EmotionVizError
    from workers.operations.audit import audited

    try:
        audited("restore", target=source.name, detail={"clean": clean})
    except EmotionVizError as exc:
        sys.stderr.write(f"emotionviz restore: not recorded in the operators' trail: {exc}\n")


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from db.backup import BackupError, database_name, restore, user_object_count
    from workers.bootstrap import database_direct_url
    from workers.entrypoints.cli_contract import InputError

    url = database_direct_url(settings)
    source = Path(args.input)
    if not source.exists():
        raise BackupError(f"backup file not found: {source}")
    # --clean on an empty database has nothing to replace: no question to ask.
    clean_first = bool(args.clean) and user_object_count(url) > 0
    if clean_first and not args.yes:
        name = database_name(url)
        if not sys.stdin.isatty():
            raise InputError("--clean replaces the whole database: confirm with --yes")
        sys.stderr.write(
            f"This drops every table of database {name!r} and restores {source.name}.\n"
            f"Type the database name to confirm: "
        )
        sys.stderr.flush()
        if sys.stdin.readline().strip() != name:
            raise BackupError("not confirmed: nothing was changed")
    report = restore(url, source, clean_first=clean_first)
    replaced = " (the previous contents replaced)" if clean_first else ""
    _out(f"restored from {args.input}{replaced}")
    _audit_restore(source, clean_first)
    if report.tombstones:
        migrated = " (migrated to head to keep them)" if report.migrated else ""
        _out(
            f"erasures applied again: {report.tombstones} tombstones{migrated}, "
            f"{report.erased_again} people the backup held erased again ({report.rows} rows)"
        )
    if report.erased_again:
        _after_reerase(report.erased_again)
    return 0


def _after_reerase(people: int) -> None:
    """The re-erased people's pictures (their media_garbage rows), then the audit."""
    from workers import bootstrap
    from workers.operations.audit import audited

    try:
        rows, files = bootstrap.media_lifecycle().collect_garbage(limit=100_000)
        _out(f"pictures of erased people: {files} files deleted ({rows} garbage rows)")
    except Exception as exc:  # noqa: BLE001 - the reconciler collects them within a minute
        _out(f"pictures of erased people left to the reconciler: {type(exc).__name__}")
    audited("user_erase_reapplied", target="after a restore", count=people)


# --- parser ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="emotionviz",
        description=(
            "EmotionVisualizer background workers. With DATABASE_URL / REDIS_URL unset, "
            "commands start an embedded PostgreSQL and Redis in DATA_DIR (default .data)."
        ),
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of a failure (for bug reports)"
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser
    )

    def add(name: str, handler: Handler | None, help_text: str) -> argparse.ArgumentParser:
        """One subcommand; ``handler`` None for a group whose actions each set theirs."""
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
        if handler is not None:
            p.set_defaults(handler=handler)
        return p

    p = add("services", cmd_services, "start, stop or show the embedded PostgreSQL and Redis")
    p.add_argument("action", choices=["start", "stop", "status"])

    p = add("migrate", cmd_migrate, "apply database migrations (alembic upgrade head)")
    p.add_argument("--revision", default="head", help="target revision (default head)")
    p.add_argument("--downgrade", metavar="REV", help="downgrade to REV instead (e.g. base)")
    p.add_argument("--check", action="store_true", help="then verify models == schema")

    add("seed", cmd_seed, "migrate, then create the development users and entries (idempotent)")

    p = add("backup", cmd_backup, "pg_dump the database: FILE.dump (custom) or FILE.sql.gz")
    p.add_argument("output", help="target file; .sql.gz for gzipped SQL, else custom format")

    p = add("restore", cmd_restore, "restore a .dump or .sql.gz backup into an empty database")
    p.add_argument("input", help="backup file written by 'emotionviz backup'")
    p.add_argument(
        "--clean",
        action="store_true",
        help="replace a non-empty database: drop everything in it first (asks to confirm)",
    )
    p.add_argument("--yes", action="store_true", help="with --clean: do not ask (for scripts)")
    p.epilog = (
        "Exit 0: restored. Exit 1: the operation failed, including a database that is not "
        "empty (without --clean), one in use, or a declined confirmation. Exit 2: bad "
        "input, including --clean with no terminal to confirm on and no --yes."
    )

    register_all(add)
    return parser


@contextlib.contextmanager
def _loading(own_process: bool) -> Iterator[None]:
    """The cyclic collector off while a command's modules load: the ~800 modules make
    objects that live as long as the process, and the collections they trigger (two
    full ones over all of them) were ~0.15 s of a `status`, ~20% of its CPU. Then
    ``gc.freeze``: later collections, in a long-running command too, skip those
    objects; the collector runs again for whatever the command itself allocates. Only
    where the process is the command's (a caller's objects are not ours to freeze)."""
    if not own_process:
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = " ".join(
        part for part in (args.command, getattr(args, "action", None)) if isinstance(part, str)
    )
    try:
        with _loading(own_process=argv is None):
            from workers.settings import get_settings  # heavy (pydantic-settings): not for --help

            settings = get_settings()
            from workers.bootstrap import configure_process  # heavy: only once args are valid

            configure_process(settings)
            if isinstance(args.handler, Lazy):
                importlib.import_module(args.handler.module)  # the command's module, and its own
        return int(args.handler(args, settings))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        code, line = fail_line(command, exc)
        sys.stderr.write(line + "\n")
        return code
    finally:
        if argv is None:  # the process is this command (not a caller's): it exits next
            # Skip the interpreter's last collection over the ~1,000 modules' objects
            # the command imported (~0.3 s of a `status`): the exit frees them anyway.
            # Open files and atexit handlers (logging's flush) are unaffected.
            gc.freeze()


if __name__ == "__main__":
    raise SystemExit(main())
