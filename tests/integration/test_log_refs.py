"""Log lines carry references of ids, never the ids (issue 24.5): a bound id, an id in
an error's text, a library's line; the message id stays raw; the reference is what
`emotionviz user log-ref` prints for the key in LOG_PSEUDONYM_KEY."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from workers.logging import log_ref

PERSON, ENTRY, MESSAGE = (str(uuid.uuid4()) for _ in range(3))
SCRIPT = f"""
import logging, structlog
from workers.logging import configure_logging, get_logger
configure_logging(fmt='json')
structlog.contextvars.bind_contextvars(message_id='{MESSAGE}', user_id='{PERSON}')
get_logger('t').warning('failed', reason='another worker holds the lease on entry {ENTRY}')
logging.getLogger('dramatiq').error('Failed to process entry.created[{MESSAGE}] for {ENTRY.upper()}')
"""


def test_lines_carry_references_and_the_cli_prints_the_same() -> None:
    env = {**os.environ, "LOG_PSEUDONYM_KEY": "k-" + uuid.uuid4().hex}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    text = done.stderr
    assert PERSON not in text and ENTRY not in text.lower(), text
    ours, library = (json.loads(line) for line in text.strip().splitlines()[-2:])
    key = env["LOG_PSEUDONYM_KEY"]
    assert ours["user_id"] == log_ref(PERSON, key) and ours["message_id"] == MESSAGE
    assert ours["reason"].endswith(log_ref(ENTRY, key))
    assert f"[{MESSAGE}]" in library["event"] and log_ref(ENTRY, key) in library["event"]
    assert log_ref(ENTRY, key) != log_ref(ENTRY)  # the key matters
    cli = subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", "user", "log-ref", ENTRY, "--json"],
        env={**env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["log_ref"] == log_ref(ENTRY, key)


def test_the_key_is_read_from_dot_env_as_the_settings_read_it(tmp_path: Path) -> None:
    key = "dotenv-" + uuid.uuid4().hex
    (tmp_path / ".env").write_text(f"LOG_LEVEL=INFO\nLOG_PSEUDONYM_KEY={key}  # secret\n")
    env = {k: v for k, v in os.environ.items() if k != "LOG_PSEUDONYM_KEY"}
    env["PYTHONPATH"] = str(Path.cwd())
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    ours = json.loads(done.stderr.strip().splitlines()[-2])
    assert ours["user_id"] == log_ref(PERSON, key)
