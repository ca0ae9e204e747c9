"""Browser tests of the console: Debian's Chromium driven by Playwright for Python,
against the console running as its own server process (``emotionviz console`` on a
free port), real PostgreSQL and Redis and a real worker process (tests/e2e's Harness,
with the Gemini emulator).

Without Chromium (or Playwright) the tests that need a browser skip and say why; on
CI (``CI`` set) they fail instead, since scripts/test installs Chromium there.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from sqlalchemy import text

from tests.conftest import REPO_ROOT
from tests.e2e.conftest import Harness, harness  # noqa: F401 - the harness fixture

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# As root in a closed network: no sandbox, no GPU, no background calls home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "bench-output" / "console-screenshots"
TOKEN = "browser-test-" + uuid.uuid4().hex


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium; scripts/test does as root)"
    return None


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Console:
    url: str
    proc: subprocess.Popen[str]
    log_path: Path
    lines: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One raw HTTP request (no redirects followed, no cookies but those given)."""
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=15)
        body = urlencode(form) if form is not None else None
        sent = dict(headers or {})
        if body is not None:
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return Reply(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read().decode(errors="replace"),
            )
        finally:
            conn.close()


def _read_lines(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))


@pytest.fixture(scope="module")
def console(harness: Harness, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:  # noqa: F811
    log_path = tmp_path_factory.mktemp("console") / "console.log"
    env = {**harness.env, "CONSOLE_TOKEN": TOKEN}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.entrypoints.cli", "console", "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    lines: list[str] = []
    reader = threading.Thread(target=_read_lines, args=(proc, lines), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    url = None
    while url is None and time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        url = next((line.split()[-1] for line in lines if "listening on" in line), None)
        time.sleep(0.05)
    assert url is not None, f"the console did not start:\n{log_path.read_text()[-3000:]}"
    served = Console(url.rstrip("/"), proc, log_path, lines)
    while served.request("GET", "/healthz").status != 200:
        assert time.monotonic() < deadline, "the console does not answer"
        time.sleep(0.05)
    yield served
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(timeout=5)  # it ends at the pipe's end of file
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run on CI: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Tab:
    """A browser tab on the console, and what the page reported (errors, CSP)."""

    page: Any
    console: Console
    messages: list[str]
    errors: list[str]

    def go(self, path: str) -> Any:
        return self.page.goto(self.console.url + path)

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def csrf(self) -> str:
        return str(self.page.locator("input[name=csrf]").first.get_attribute("value"))

    def cookie_header(self) -> str:
        cookies = self.page.context.cookies(self.console.url)
        return "; ".join(f"{c['name']}={c['value']}" for c in cookies)


def _open_tab(browser: Any, console: Console) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    tab = Tab(page, console, [], [])
    page.on("console", lambda message: tab.messages.append(message.text))
    page.on("pageerror", lambda error: tab.errors.append(str(error)))
    yield tab
    context.close()
    # Our own pages never trip the Content-Security-Policy and never throw.
    assert not [m for m in tab.messages if "Content Security Policy" in m], tab.messages
    assert tab.errors == []


@pytest.fixture
def anonymous(browser: Any, console: Console) -> Iterator[Tab]:
    yield from _open_tab(browser, console)


@pytest.fixture
def tab(browser: Any, console: Console) -> Iterator[Tab]:
    """A tab signed in through the login form."""
    for opened in _open_tab(browser, console):
        opened.go("/login")
        opened.page.fill("#token", TOKEN)
        opened.page.click("#login-form button[type=submit]")
        opened.page.wait_for_url(console.url + "/")
        yield opened


# --- data ------------------------------------------------------------------------------


def add_entry(harness: Harness, situation: str) -> tuple[uuid.UUID, uuid.UUID]:  # noqa: F811
    with harness.engine.begin() as conn:
        user_id = conn.execute(
            text(
                "INSERT INTO users (email, hashed_password, name) VALUES (:e, 'x', 'B') RETURNING id"
            ),
            {"e": f"browser-{uuid.uuid4().hex[:8]}@example.com"},
        ).scalar_one()
        entry_id = conn.execute(
            text(
                "INSERT INTO emotion_entries (user_id, situation, emotions, intensity) "
                "VALUES (:u, :s, CAST(:em AS text[]), 0.5) RETURNING id"
            ),
            {"u": user_id, "s": situation, "em": ["joy", "anxiety"]},
        ).scalar_one()
    return entry_id, user_id


def add_session(harness: Harness, user_id: uuid.UUID, situation: str) -> uuid.UUID:  # noqa: F811
    with harness.engine.begin() as conn:
        return uuid.UUID(
            str(
                conn.execute(
                    text(
                        "INSERT INTO intake_sessions (user_id, initial_situation) "
                        "VALUES (:u, :s) RETURNING id"
                    ),
                    {"u": user_id, "s": situation},
                ).scalar_one()
            )
        )
