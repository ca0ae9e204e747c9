"""Every JSON log line names its machine (issue 21: a fleet's logs end up in one place):
HOSTNAME as containers and Kubernetes set it, else the host's name."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

SCRIPT = (
    "from workers.logging import configure_logging, get_logger; "
    "configure_logging(fmt='json'); get_logger('t').info('hello', n=1)"
)


def _line(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    parsed: dict[str, object] = json.loads(done.stderr.strip().splitlines()[-1])
    return parsed


def test_a_json_line_carries_the_machine_named_by_hostname() -> None:
    line = _line({**os.environ, "HOSTNAME": "fleet-m7"})
    assert line["machine"] == "fleet-m7" and line["event"] == "hello", line


def test_without_hostname_the_line_carries_the_hosts_name() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HOSTNAME"}
    assert _line(env)["machine"] == socket.gethostname()
