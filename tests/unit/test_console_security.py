"""The console's security rules that need no server: which addresses count as
loopback, when a token is required or made, where a redirect may go; and the CLI's
one-line refusals (exit 2 without a token off loopback, exit 1 on a taken port)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from domain.errors import ConfigurationError
from workers.console.security import ConsoleAuth, is_loopback, local_path, resolve_auth
from workers.settings import Settings

pytestmark = pytest.mark.unit


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("console.example.org", False),
        ("", False),
    ],
)
def test_only_loopback_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_configured_token_is_used_anywhere_if_long_enough() -> None:
    auth = resolve_auth(_settings(console_token="x" * 16), "0.0.0.0")
    assert (auth.token, auth.generated) == ("x" * 16, False)
    with pytest.raises(ConfigurationError, match="at least 16 characters"):
        resolve_auth(_settings(console_token="short"), "127.0.0.1")


def test_without_a_token_loopback_gets_one_per_run_and_other_addresses_are_refused() -> None:
    first = resolve_auth(_settings(), "127.0.0.1")
    second = resolve_auth(_settings(), "127.0.0.1")
    assert first.generated and len(first.token) >= 32 and first.token != second.token
    with pytest.raises(ConfigurationError, match=r"refusing to listen on 0\.0\.0\.0 without"):
        resolve_auth(_settings(), "0.0.0.0")
    with pytest.raises(ConfigurationError, match="without CONSOLE_TOKEN"):
        resolve_auth(_settings(console_token=""), "10.0.0.5")  # empty means unset


def test_the_session_holds_a_mark_of_the_token_never_the_token() -> None:
    auth, rotated = ConsoleAuth("a-token-of-some-length", False), ConsoleAuth("b" * 22, False)
    assert auth.matches("a-token-of-some-length") and not auth.matches("a-token-of-some-lengt")
    assert not auth.matches("ä-token-of-some-length")  # non-ASCII input compares, not raises
    assert auth.token not in auth.session_mark and auth.token not in auth.signing_key
    assert auth.session_mark != auth.signing_key
    assert rotated.session_mark != auth.session_mark  # rotation signs everybody out


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/failures?class=safety", "/failures?class=safety"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("failures", "/"),
        (None, "/"),
    ],
)
def test_redirects_after_sign_in_stay_on_the_site(target: str | None, kept: str) -> None:
    assert local_path(target) == kept


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": "/usr/bin:/bin",
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "LOG_FORMAT": "json",
    }
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", "console", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_refuses_a_public_address_without_a_token_in_one_line(tmp_path: Path) -> None:
    result = _cli(tmp_path, "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "emotionviz console: refusing to listen on 0.0.0.0 without CONSOLE_TOKEN: set it "
        "(16+ characters), or listen on 127.0.0.1"
    ]
    assert result.stdout == ""
    short = _cli(tmp_path, "--port", "0", CONSOLE_TOKEN="tiny")
    assert short.returncode == 2 and "at least 16 characters" in short.stderr
    assert len(short.stderr.strip().splitlines()) == 1 and "tiny" not in short.stderr


def test_the_cli_says_in_one_line_that_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = _cli(tmp_path, "--port", str(port), CONSOLE_TOKEN="t" * 20)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"emotionviz console: cannot listen on 127.0.0.1:{port}"
    )
    assert not (tmp_path / "data").exists()  # refused before any embedded server started
