"""The paused queues' mirror follows PostgreSQL's commits (workers/operations/pauses.py):
a change that does not commit never reaches the mirror, a mirror that cannot be written
after the commit is one line and leaves the change in place, and a mirror present but
stale is rewritten by ``sync_mirror`` (what each worker runs every few seconds). Each
case in its own process against the test's PostgreSQL and Redis, as the CLI runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import RUN_ID, DatabaseFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def env(database_factory: DatabaseFactory, redis_server_url: str) -> Iterator[dict[str, str]]:
    name, url = database_factory.create()
    namespace = f"evt:{RUN_ID}:mirror-{uuid.uuid4().hex[:6]}"
    yield {
        "DATABASE_URL": url,
        "REDIS_URL": redis_server_url,
        "REDIS_NAMESPACE": namespace,
        "PROVIDER": "local",
        "PYTHONPATH": str(Path.cwd()),
        "EMOTIONVIZ_OPERATOR": "mirror-tester",
    }
    database_factory.drop(name)
    client = redis.Redis.from_url(redis_server_url)
    keys = list(client.scan_iter(match=f"{namespace}*"))
    if keys:
        client.delete(*keys)


_PRELUDE = """
import json, redis
from db import uow as uow_module
from domain.errors import EmotionVizError
from workers.messaging.pauses import PauseMirror
from workers.operations import pauses
def state():
    return {"rows": [p.queue for p in pauses.paused_queues()], "mirror": pauses.mirrored()}
"""


def _python(env: dict[str, str], code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PRELUDE + code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path.cwd(),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert isinstance(result, dict)
    return result


def test_a_pause_that_does_not_commit_never_reaches_the_mirror(env: dict[str, str]) -> None:
    result = _python(
        env,
        """
pauses.restore_mirror()
def refuse(self):
    raise RuntimeError("the commit failed")
uow_module.UnitOfWork.commit = refuse
try:
    pauses.pause_queue("analytics")
except RuntimeError:
    pass
print(json.dumps(state()))
""",
    )
    assert result == {"rows": [], "mirror": {}}


def test_a_mirror_that_cannot_be_written_leaves_the_committed_change_and_says_so(
    env: dict[str, str],
) -> None:
    result = _python(
        env,
        """
def refuse(self, queues):
    raise redis.ConnectionError("Redis is down")
PauseMirror.write = refuse
try:
    pauses.pause_queue("analytics")
    line = None
except EmotionVizError as exc:
    line = str(exc)
print(json.dumps({**state(), "line": line}))
""",
    )
    assert result["rows"] == ["analytics"]  # the pause holds: PostgreSQL is the truth
    assert result["mirror"] is None  # never written
    line = str(result["line"])
    assert "queue analytics is paused in the database" in line
    assert "next sync" in line and "\n" not in line


def test_a_stale_mirror_is_rewritten_from_the_database(env: dict[str, str]) -> None:
    result = _python(
        env,
        """
pauses.pause_queue("analytics")
mirror = pauses._mirror()
mirror.write({})  # present but stale: a promoted replica without the last write
stale = pauses.mirrored()
first = pauses.sync_mirror()
again = pauses.sync_mirror()
print(json.dumps({**state(), "stale": stale, "first": first, "again": again}))
""",
    )
    assert result["stale"] == {}
    assert (result["first"], result["again"]) == (True, False)
    assert result["rows"] == ["analytics"]
    mirror = result["mirror"]
    assert isinstance(mirror, dict) and list(mirror) == ["analytics"]
