"""Backup and restore with pg_dump / pg_restore, in the spec's two formats:
custom (``.dump``) and plain SQL gzipped (``.sql.gz``).

The password travels in PGPASSWORD, never on a command line or in a log line.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from db.embedded import postgres_bin_dir
from domain.errors import EmotionVizError


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


def _run(cmd: list[str], env: dict[str, str], **kwargs: object) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else ""
        raise BackupError(f"{Path(cmd[0]).name} failed: {stderr.strip()[:500]}")


def backup(database_url: str, output: Path) -> Path:
    args, env = _libpq_args(database_url)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.name.endswith(".sql.gz"):
        with gzip.open(output, "wb") as sink:
            proc = subprocess.run(
                [_tool("pg_dump"), *args, "--no-owner"], env=env, capture_output=True
            )
            if proc.returncode != 0:
                raise BackupError(f"pg_dump failed: {proc.stderr.decode(errors='replace')[:500]}")
            sink.write(proc.stdout)
    else:
        _run([_tool("pg_dump"), *args, "--format=custom", "--no-owner", "--file", str(output)], env)
    return output


def restore(database_url: str, source: Path) -> None:
    """Restore into an existing (normally empty) database."""
    if not source.exists():
        raise BackupError(f"backup file not found: {source}")
    args, env = _libpq_args(database_url)
    if source.name.endswith(".sql.gz"):
        with gzip.open(source, "rb") as dump:
            _run(
                [_tool("psql"), *args, "--quiet", "--set", "ON_ERROR_STOP=1"],
                env,
                input=dump.read(),
            )
    else:
        _run([_tool("pg_restore"), *args, "--no-owner", "--exit-on-error", str(source)], env)
