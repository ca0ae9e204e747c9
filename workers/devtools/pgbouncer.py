"""A PgBouncer in transaction pooling mode in front of a PostgreSQL server, started on a
free loopback port (Debian's ``pgbouncer`` package): the e2e test behind a pooler and
``scripts/fleet`` use it. Development tooling: product code never imports it."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from domain.errors import ConfigurationError


class PgBouncerUnavailableError(ConfigurationError):
    """PgBouncer is not installed here (scripts/test installs Debian's package as root)."""


def pgbouncer_binary() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_pgbouncer(
    server_url: str,
    log_path: Path,
    *,
    pool_size: int = 12,
    max_client_conn: int = 400,
    port: int = 0,
) -> Iterator[str]:
    """PgBouncer (transaction mode) in front of ``server_url``; yields the URL template of
    its listener (``{db}`` for the database name). Raises PgBouncerUnavailableError when the
    binary is missing, RuntimeError when it does not start."""
    binary = pgbouncer_binary()
    if binary is None:
        raise PgBouncerUnavailableError(
            "pgbouncer is not installed (scripts/test installs Debian's package as root)"
        )
    server = urlsplit(server_url)
    user = unquote(server.username or "postgres")
    port = port or free_port()
    # The embedded server listens on a Unix socket only (host=<folder> in the URL), in a
    # folder only its own user may enter: PgBouncer then runs as that user.
    socket_dir = parse_qs(server.query).get("host", [""])[0] or None
    socket_dir = socket_dir if socket_dir and socket_dir.startswith("/") else None
    target = (
        f"host={socket_dir} port={server.port or 5432}"
        if socket_dir
        else f"host={server.hostname or '127.0.0.1'} port={server.port or 5432}"
    )
    # As root, pgbouncer takes another user's identity before it reads its files: a
    # folder that user can read (a test's own is private to root).
    folder = Path(tempfile.mkdtemp(prefix="emotionviz-pgbouncer-"))
    folder.chmod(0o755)
    password = unquote(server.password or "")
    (folder / "userlist.txt").write_text(f'"{user}" "{password}"\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = {target}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {folder / 'userlist.txt'}\n"
        "pool_mode = transaction\n"
        f"max_client_conn = {max_client_conn}\n"
        f"default_pool_size = {pool_size}\n"
        f"admin_users = {user}\n"  # SHOW CLIENTS / SHOW POOLS for the callers
    )
    for name in ("userlist.txt", "pgbouncer.ini"):
        (folder / name).chmod(0o644)
    # PgBouncer refuses to run as root: as root, it takes another user's identity (-u).
    runs_as = pwd.getpwuid(os.stat(socket_dir).st_uid).pw_name if socket_dir else "nobody"
    as_user = ["-u", runs_as] if os.geteuid() == 0 else []
    with log_path.open("ab") as log_file:  # its log on stderr, into our file
        proc = subprocess.Popen(
            [binary, *as_user, str(folder / "pgbouncer.ini")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"pgbouncer did not start (exit {proc.poll()}): {log}")
            time.sleep(0.1)
        auth = f"{quote(user)}:{quote(password)}@" if password else f"{quote(user)}@"
        yield f"postgresql://{auth}127.0.0.1:{port}/{{db}}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
