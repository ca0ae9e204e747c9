"""The completion events' webhook settings: a URL that cannot be used is refused with
a reason that does not echo it, the secret follows the Standard Webhooks length (24 to
64 bytes), and the secret and the URL's token-bearing parts are masked in every log
line of any process (configure_process, not only the worker)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from domain.errors import ConfigurationError
from domain.redaction import MASK
from workers.settings import (
    Settings,
    load_settings,
    webhook_key,
    webhook_secrets,
    webhook_target,
)

pytestmark = pytest.mark.unit

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


def _settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg, arg-type]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example:80a/x?token=sekrit", "the port is not a number"),
        ("http://hooks.example:99999/x?token=sekrit", "the port is not a number"),
        ("https://user:sekrit@hooks.example/x", "must not hold user:password@"),
        ("ftp://hooks.example/x?token=sekrit", "http:// or https://"),
        ("http:///x?token=sekrit", "names no host"),
    ],
)
def test_an_unusable_webhook_url_is_refused_without_echoing_it(url: str, reason: str) -> None:
    with pytest.raises(ValidationError):
        _settings(events_webhook_url=url, events_webhook_secret=SECRET)
    # What the CLI and the worker print (one line, exit 2): load_settings' report.
    with pytest.raises(ConfigurationError) as caught:
        load_settings(_env_file=None, events_webhook_url=url, events_webhook_secret=SECRET)
    message = str(caught.value)
    assert "EVENTS_WEBHOOK_URL" in message and reason in message
    assert "sekrit" not in message and "\n" not in message


def test_an_ipv6_literal_is_given_to_http_client_without_brackets_and_with_a_port() -> None:
    target = webhook_target("http://[::1]/hooks?token=t")
    assert (target.host, target.port, target.path) == ("::1", 80, "/hooks?token=t")
    assert webhook_target("https://[2001:db8::5]:8443/").port == 8443
    assert webhook_target("https://hooks.example").port == 443
    assert target.redacted() == "http://[::1]:80/..."


def test_the_secret_is_24_to_64_bytes_as_standard_webhooks_asks() -> None:
    for size, ok in ((16, False), (23, False), (24, True), (64, True), (65, False)):
        secret = "whsec_" + base64.b64encode(b"k" * size).decode()
        if ok:
            assert len(webhook_key(secret)) == size
        else:
            with pytest.raises(ValueError, match="24 to 64 bytes"):
                webhook_key(secret)


def test_configure_process_masks_the_webhook_secret_and_the_urls_token(tmp_path: Path) -> None:
    url = "https://hooks.example/services/T0001/B0002/abcdefgh?token=qwerty123"
    settings = _settings(events_webhook_url=url, events_webhook_secret=SECRET)
    assert set(webhook_secrets(settings)) >= {SECRET, url, "token=qwerty123"}
    # In a process of its own, as the CLI: configure_process sets the process's logging.
    line = f"secret {SECRET} url {url} query token=qwerty123 path /services/T0001/B0002/abcdefgh"
    program = (
        "from workers.bootstrap import configure_process; from workers.logging import scrub; "
        f"configure_process(); print(scrub({line!r}))"
    )
    env = {**os.environ, "EVENTS_WEBHOOK_URL": url, "EVENTS_WEBHOOK_SECRET": SECRET}
    env["PYTHONPATH"] = str(Path.cwd())
    done = subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    masked = done.stdout
    assert SECRET not in masked and "qwerty123" not in masked and "abcdefgh" not in masked
    assert masked.count(MASK) == 4
