"""Backup and restore with pg_dump / pg_restore, in the spec's two formats:
custom (``.dump``) and plain SQL gzipped (``.sql.gz``). Both stream: a dump of any size
goes through this process a chunk at a time (or not at all, for the custom format).

The password travels in PGPASSWORD, never on a command line or in a log line.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from db.embedded import postgres_bin_dir
from domain.errors import EmotionVizError

# Neither format passes through memory whole: at most this much of a dump at a time.
CHUNK_BYTES = 1024 * 1024


class BackupError(EmotionVizError):
    """pg_dump, pg_restore or psql failed."""


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


def restore(database_url: str, source: Path) -> None:
    """Restore into an existing (normally empty) database. A .sql.gz is decompressed
    chunk by chunk into psql's standard input, which stops at the first error."""
    if not source.exists():
        raise BackupError(f"backup file not found: {source}")
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
