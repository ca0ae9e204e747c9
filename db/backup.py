"""Backup and restore with pg_dump / pg_restore, in the spec's two formats:
custom (``.dump``) and plain SQL gzipped (``.sql.gz``). Both stream: a dump of any size
goes through this process a chunk at a time (or not at all, for the custom format).

The password travels in PGPASSWORD, never on a command line or in a log line. The URL
is the direct one (DATABASE_DIRECT_URL): pg_dump and pg_restore need a session of their
own (a snapshot, SETs), which a transaction pooler does not keep.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from db.embedded import postgres_bin_dir
from domain.errors import EmotionVizError

# Neither format passes through memory whole: at most this much of a dump at a time.
CHUNK_BYTES = 1024 * 1024


class BackupError(EmotionVizError):
    """pg_dump, pg_restore or psql failed."""


class DatabaseNotEmptyError(BackupError):
    """The target of a restore already holds tables or other objects of its own."""


# Objects a restore would collide with: relations, functions and types outside the
# system schemas, and schemas other than public (every fresh database has public).
_SYSTEM = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
)
_USER_OBJECTS_SQL = f"""
SELECT
  (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE {_SYSTEM})
+ (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE {_SYSTEM})
+ (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
   WHERE {_SYSTEM} AND t.typtype IN ('e', 'd', 'r', 'm'))
+ (SELECT count(*) FROM pg_namespace n WHERE {_SYSTEM} AND n.nspname <> 'public')
+ (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
"""

# Drop what a restore would collide with and leave a fresh database's public schema,
# with PostgreSQL 15's default privileges on it. A worker holding a lock makes this
# fail after the lock timeout instead of waiting forever.
_CLEAN_SQL = f"""
DO $$
DECLARE name text;
BEGIN
  FOR name IN SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' LOOP
    EXECUTE format('DROP EXTENSION %I CASCADE', name);
  END LOOP;
  FOR name IN SELECT n.nspname FROM pg_namespace n WHERE {_SYSTEM} LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', name);
  END LOOP;
END $$;
CREATE SCHEMA public;
GRANT USAGE ON SCHEMA public TO PUBLIC;
"""
_CLEAN_LOCK_TIMEOUT = "10s"


def _tool(name: str) -> str:
    # Prefer the newest client: pgserver's (16) can dump a 15 or 16 server; an older
    # pg_dump refuses a newer server.
    bundled = postgres_bin_dir()
    if bundled is not None and (bundled / name).exists():
        return str(bundled / name)
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install the PostgreSQL client tools")
    return found


def _libpq_args(database_url: str) -> tuple[list[str], dict[str, str]]:
    url = make_url(database_url)
    args = ["--dbname", url.database or "postgres"]
    env = dict(os.environ)
    host = url.query.get("host") or url.host
    if isinstance(host, tuple):
        host = host[0]
    if host:
        args += ["--host", str(host)]
    if url.port:
        args += ["--port", str(url.port)]
    if url.username:
        args += ["--username", url.username]
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return args, env


def _run(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, check=False)
    if proc.returncode != 0:
        raise BackupError(_failure(cmd[0], proc.stderr))


def _failure(tool: str, stderr: bytes) -> str:
    text = " ".join(stderr.decode(errors="replace").split())
    return f"{Path(tool).name} failed: {text[:500] or 'no message'}"


@contextlib.contextmanager
def _replacing(output: Path) -> Iterator[Path]:
    """Write beside ``output``, then rename: a failed backup never leaves a file that
    looks like a good one."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    try:
        yield partial
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


def backup(database_url: str, output: Path) -> Path:
    """Dump to ``output``: .sql.gz is plain SQL gzipped here, chunk by chunk as pg_dump
    writes it; anything else is pg_dump's custom format, written by pg_dump itself."""
    args, env = _libpq_args(database_url)
    with _replacing(output) as partial:
        if not output.name.endswith(".sql.gz"):
            _run(
                [_tool("pg_dump"), *args, "--format=custom", "--no-owner", "--file", str(partial)],
                env,
            )
            return output
        # stderr to a file, not a pipe: a pipe nobody reads could fill and stall pg_dump.
        with (
            tempfile.TemporaryFile() as errors,
            gzip.open(partial, "wb", compresslevel=6) as sink,  # gzip(1)'s default level
            subprocess.Popen(
                [_tool("pg_dump"), *args, "--no-owner"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=errors,
            ) as proc,
        ):
            assert proc.stdout is not None
            shutil.copyfileobj(proc.stdout, sink, CHUNK_BYTES)
            if proc.wait() != 0:
                errors.seek(0)
                raise BackupError(_failure("pg_dump", errors.read()))
    return output


def _engine(database_url: str) -> Engine:
    from db.engine import make_engine

    return make_engine(database_url, null_pool=True, application_name="emotionviz-restore")


def database_name(database_url: str) -> str:
    return make_url(database_url).database or "postgres"


def user_object_count(database_url: str) -> int:
    """How many tables, sequences, functions, types, schemas and extensions the database
    holds beyond what a freshly created one has (0: empty)."""
    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(_USER_OBJECTS_SQL)).scalar_one())
    finally:
        engine.dispose()


def clean(database_url: str) -> None:
    """Drop every schema (public is recreated empty) and extension: the database is then
    as empty as a new one. One transaction: on failure nothing is dropped."""
    engine = _engine(database_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_CLEAN_LOCK_TIMEOUT}'")
            conn.execute(text(_CLEAN_SQL))
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
            raise BackupError(
                f"database {database_name(database_url)!r} is in use (a lock was held for "
                f"{_CLEAN_LOCK_TIMEOUT}): stop the workers and the scheduler, then retry; "
                "nothing was dropped"
            ) from None
        raise
    finally:
        engine.dispose()


@dataclass(frozen=True)
class RestoreReport:
    """The erasures applied again after the restore (docs/operations.md, "Erasing a
    person, and retention")."""

    tombstones: int  # tombstones kept across the restore (the database's and the dump's)
    erased_again: int  # people the backup brought back, erased again
    rows: int  # their rows deleted
    migrated: bool  # the backup predated the tombstones: migrated to head to keep them


# An erased person's tombstone: the digest of their id, and the erasure's counts.
Tombstones = list[tuple[bytes, dict[str, Any]]]


def _tombstones(database_url: str) -> Tombstones:
    """The database's tombstones (none if it has no erased_users table)."""
    from db.repositories.erase import read_tombstones

    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            return read_tombstones(conn)
    finally:
        engine.dispose()


def reapply_tombstones(database_url: str, kept: Tombstones) -> RestoreReport:
    """Write back the tombstones read before a restore, then erase again every person
    the restored data holds a tombstone for (the kept ones and the dump's own): a
    restore never brings an erased person back. A backup older than the tombstones'
    table is migrated to head first, or the tombstones would be lost with it."""
    from sqlalchemy.orm import Session

    from db import migrate
    from db.repositories.erase import (
        EraseRepository,
        read_tombstones,
        users_with_digests,
        write_tombstones,
    )

    engine = _engine(database_url)
    migrated = False
    try:
        with engine.connect() as conn:
            has_table = bool(
                conn.execute(text("SELECT to_regclass('public.erased_users') IS NOT NULL")).scalar()
            )
        if kept and not has_table:
            migrate.upgrade(database_url)
            migrated, has_table = True, True
        if not has_table:
            return RestoreReport(0, 0, 0, False)
        erased = rows = 0
        with Session(engine) as session:
            conn = session.connection()
            write_tombstones(conn, kept)
            everyone = read_tombstones(conn)
            repo = EraseRepository(session)
            for user_id in users_with_digests(conn, [d for d, _ in everyone]):
                person = repo.person(user_id)
                if person is not None:
                    rows += sum(repo.delete_person(person, "erased-person").values())
                    erased += 1
            session.commit()
        return RestoreReport(len(everyone), erased, rows, migrated)
    finally:
        engine.dispose()


def tombstone_file(database_url: str, source: Path) -> Path:
    """Where a restore keeps the tombstones while it replaces the database: beside the
    backup it restores, named by the database (a restore of another backup from the
    same folder finds it)."""
    return source.parent / f"emotionviz-tombstones-{database_name(database_url)}.json"


def read_tombstone_file(path: Path) -> Tombstones:
    """The tombstones a restore kept in ``path`` (none if there is no such file)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise BackupError(
            f"cannot read the tombstones kept in {path}: {exc}; nothing was changed "
            "(move the file away only if no one was erased since the backup)"
        ) from None
    try:
        return [(bytes.fromhex(t["digest"]), dict(t.get("report") or {})) for t in raw]
    except (TypeError, KeyError, ValueError, AttributeError):
        raise BackupError(f"{path} does not hold tombstones; nothing was changed") from None


def _write_tombstone_file(path: Path, tombstones: Tombstones) -> None:
    """Digests and counts only, as erased_users holds them; written whole or not at all,
    readable by the operator only."""
    data = [{"digest": d.hex(), "report": r} for d, r in tombstones]
    partial = path.with_name(path.name + ".partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(
            f"cannot keep the {len(tombstones)} tombstones in {path} before replacing the "
            f"database: {exc.strerror or exc}; nothing was changed"
        ) from None


def _merge(*sources: Tombstones) -> Tombstones:
    merged: dict[bytes, dict[str, Any]] = {}
    for tombstones in sources:
        for digest, report in tombstones:
            merged.setdefault(digest, report)
    return list(merged.items())


def _keep_in_database(database_url: str, tombstones: Tombstones) -> bool:
    """Write the tombstones back into what a failed load left (erased_users created if
    missing); False if that failed too (the file still holds them)."""
    from db.repositories.erase import keep_tombstones

    engine = _engine(database_url)
    try:
        with engine.begin() as conn:
            keep_tombstones(conn, tombstones)
        return True
    except Exception:  # noqa: BLE001 - the load's error is the one to report; the file stays
        return False
    finally:
        engine.dispose()


def restore(
    database_url: str,
    source: Path,
    *,
    clean_first: bool = False,
    tombstones_at: Path | None = None,
) -> RestoreReport:
    """Restore into an empty database; with ``clean_first``, empty it first (see
    ``clean``). A database that holds objects is refused, before anything runs, rather
    than half-restored into. A .sql.gz is decompressed chunk by chunk into psql's
    standard input, which stops at the first error.

    The tombstones of erased people (``erased_users``) are read before the database is
    replaced and applied again after (``reapply_tombstones``). Until then they are kept
    in a file (``tombstones_at``, default ``tombstone_file``: beside the backup), deleted
    only once applied: if the load fails, they are also written back into what it left,
    and the next restore reads both. A tombstone file put there by hand (disaster
    recovery into an empty database) is applied the same way."""
    if not source.exists():
        raise BackupError(f"backup file not found: {source}")
    kept_at = tombstones_at or tombstone_file(database_url, source)
    if not clean_first:
        found = user_object_count(database_url)
        if found:
            raise DatabaseNotEmptyError(
                f"database {database_name(database_url)!r} is not empty ({found} objects): "
                "restore into an empty database, or add --clean to replace its contents"
            )
    kept = _merge(read_tombstone_file(kept_at), _tombstones(database_url) if clean_first else [])
    if kept:
        _write_tombstone_file(kept_at, kept)  # before anything is dropped
    if clean_first:
        clean(database_url)
    try:
        _load(database_url, source)
    except BackupError as exc:
        if not kept:
            raise
        where = (
            "written back into the database and kept in"
            if _keep_in_database(database_url, kept)
            else "kept in"
        )
        raise BackupError(
            f"{exc} -- the {len(kept)} tombstones of erased people are {where} {kept_at}: "
            "the next restore applies them (restore from that folder or leave the file "
            "beside the backup)"
        ) from None
    try:
        report = reapply_tombstones(database_url, kept)
    except Exception as exc:
        if not kept:
            raise
        first = (str(exc).splitlines() or [""])[0][:300]
        raise BackupError(
            f"the backup was loaded but the erasures were not applied again "
            f"({type(exc).__name__}: {first}); the {len(kept)} tombstones are kept in "
            f"{kept_at}: run the restore again"
        ) from exc
    kept_at.unlink(missing_ok=True)  # applied: the restored database holds them
    return report


def _load(database_url: str, source: Path) -> None:
    args, env = _libpq_args(database_url)
    if not source.name.endswith(".sql.gz"):
        _run([_tool("pg_restore"), *args, "--no-owner", "--exit-on-error", str(source)], env)
        return
    with (
        tempfile.TemporaryFile() as errors,
        gzip.open(source, "rb") as dump,
        subprocess.Popen(
            [_tool("psql"), *args, "--quiet", "--no-psqlrc", "--set", "ON_ERROR_STOP=1"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,  # the dump's SELECTs print results: not wanted
            stderr=errors,
        ) as proc,
    ):
        assert proc.stdin is not None
        try:
            shutil.copyfileobj(dump, proc.stdin, CHUNK_BYTES)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # psql stopped at an error: its exit code and stderr say which
        except (OSError, EOFError, zlib.error) as exc:  # a truncated or corrupt file
            proc.kill()
            raise BackupError(f"cannot read {source}: {exc}") from None
        if proc.wait() != 0:
            errors.seek(0)
            raise BackupError(_failure("psql", errors.read()))
