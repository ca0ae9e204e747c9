"""The emulator's per-minute quotas over real HTTP: per kind and over all calls, an
exact sliding window of arrivals, the 429 the API answers, and the stats a benchmark
reads (per kind, per listener, per time range); the CLI flags that set them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workers.devtools.emulator import EmulatorServer, EmulatorState, start_in_thread

pytestmark = pytest.mark.integration

KEY = "quota-test-key"
IMAGE, ANALYSIS = "gemini-3.1-flash-image", "gemini-3.5-flash"
ROOT = Path(__file__).resolve().parents[2]


def generate(url: str, model: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/v1beta/models/{model}:generateContent",
        data=json.dumps(
            {"contents": [{"role": "user", "parts": [{"text": "a calm lake"}]}]}
        ).encode(),
        headers={"x-goog-api-key": KEY, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}{path}", timeout=10) as response:
        return dict(json.loads(response.read()))


def post(url: str, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


@pytest.fixture
def servers() -> Iterator[list[EmulatorServer]]:
    """One state behind two listeners, as the quota benchmark uses it."""
    state = EmulatorState(api_key=KEY)
    started = [start_in_thread(state, label=label) for label in ("a", "b")]
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def test_the_image_quota_refuses_images_only_and_the_stats_count_both_answers(
    servers: list[EmulatorServer],
) -> None:
    url = servers[0].url
    post(url, "/_emulator/config", {"quota_image_per_minute": 3})
    assert [generate(url, IMAGE)[0] for _ in range(3)] == [200, 200, 200]
    code, body = generate(url, IMAGE)
    assert code == 429 and body["error"]["status"] == "RESOURCE_EXHAUSTED"
    types = {d["@type"].rsplit(".", 1)[-1]: d for d in body["error"]["details"]}
    assert types["QuotaFailure"]["violations"][0]["quotaId"].endswith("PerMinutePerProjectPerModel")
    assert types["RetryInfo"]["retryDelay"] == "1s"
    # The analysis model has its own (unlimited) quota.
    assert [generate(url, ANALYSIS)[0] for _ in range(5)] == [200] * 5
    kinds = get(url, "/_emulator/stats")["kinds"]
    assert {k: kinds["image"][k] for k in ("calls", "accepted", "rate_limited")} == {
        "calls": 4,
        "accepted": 3,
        "rate_limited": 1,
    }
    assert kinds["analysis"]["accepted"] == 5 and kinds["analysis"]["rate_limited"] == 0


def test_the_window_slides_exactly_and_a_refused_call_is_not_counted(
    servers: list[EmulatorServer],
) -> None:
    url = servers[0].url
    post(url, "/_emulator/config", {"quota_image_per_minute": 2, "quota_window_s": 1.0})
    assert generate(url, IMAGE)[0] == 200
    time.sleep(0.5)
    assert generate(url, IMAGE)[0] == 200
    # Refusals while full are not counted: they do not hold the window any longer.
    assert [generate(url, IMAGE)[0] for _ in range(3)] == [429] * 3
    time.sleep(0.6)  # the first call is out of the window, the second is not
    assert [generate(url, IMAGE)[0] for _ in range(2)] == [200, 429]


def test_the_quota_over_all_calls_still_counts_every_kind(
    servers: list[EmulatorServer],
) -> None:
    url = servers[0].url
    post(url, "/_emulator/config", {"quota_per_minute": 3})
    assert generate(url, ANALYSIS)[0] == 200 and generate(url, IMAGE)[0] == 200
    assert generate(url, ANALYSIS)[0] == 200
    assert generate(url, IMAGE)[0] == 429 and generate(url, ANALYSIS)[0] == 429
    post(url, "/_emulator/reset", {})
    assert generate(url, IMAGE)[0] == 200


def test_the_stats_split_calls_by_listener_and_by_arrival_time(
    servers: list[EmulatorServer],
) -> None:
    a, b = (server.url for server in servers)
    post(a, "/_emulator/config", {"quota_image_per_minute": 3})
    assert [generate(a, IMAGE)[0] for _ in range(2)] == [200, 200]
    between = time.time()
    assert [generate(b, IMAGE)[0] for _ in range(2)] == [200, 429]
    stats = get(a, "/_emulator/stats")
    assert stats["listeners"]["a"]["image"]["accepted"] == 2
    assert stats["listeners"]["b"]["image"] | {"first_accepted_at": 0, "last_accepted_at": 0} == {
        "calls": 2,
        "accepted": 1,
        "rate_limited": 1,
        "paid": 1,
        "first_accepted_at": 0,
        "last_accepted_at": 0,
    }
    later = get(b, f"/_emulator/stats?since={between}")["kinds"]["image"]
    assert (later["calls"], later["accepted"]) == (2, 1)
    assert later["first_accepted_at"] >= between
    earlier = get(b, f"/_emulator/stats?until={between}")["kinds"]["image"]
    assert (earlier["calls"], earlier["accepted"]) == (2, 2)


def test_paid_calls_are_the_calls_run_not_the_429s_nor_the_refused(
    servers: list[EmulatorServer],
) -> None:
    """What the paid-call ledger counts (domain/ledger.py): a 5xx was run; an injected
    429, a 400 and a quota's refusal were not."""
    url = servers[0].url
    post(url, "/_emulator/config", {"quota_analysis_per_minute": 4})
    faults = [
        {"kind": "429", "target": "analysis"},
        {"kind": "503", "target": "analysis"},
        {"kind": "400", "target": "analysis"},
    ]
    post(url, "/_emulator/faults", {"faults": faults})
    assert [generate(url, ANALYSIS)[0] for _ in range(5)] == [429, 503, 400, 200, 429]
    image_status, image = generate(url, IMAGE)
    kinds = get(url, "/_emulator/stats")["kinds"]
    assert (kinds["analysis"]["calls"], kinds["analysis"]["paid"]) == (5, 2)
    assert kinds["image"]["paid"] == 1
    # Usage metadata as the API reports it: the prompt's tokens, a 1K image's 1290.
    assert image_status == 200
    assert image["usageMetadata"]["candidatesTokenCount"] == 1290
    assert image["usageMetadata"]["promptTokenCount"] >= 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_cli_flags_set_the_quotas() -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers.entrypoints.cli",
            "emulator",
            "--port",
            str(port),
            "--api-key",
            KEY,
            "--image-quota",
            "2",
            "--quota",
            "4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        assert b"listening" in process.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        assert [generate(url, IMAGE)[0] for _ in range(3)] == [200, 200, 429]
        assert [generate(url, ANALYSIS)[0] for _ in range(3)] == [200, 200, 429]
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
