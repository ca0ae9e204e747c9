"""The operator console in a real browser, against real servers and a real worker:
the token is required, the overview is live, failures and dead letters can be fixed
from the page, cross-site posts are refused, hostile text stays text."""

from __future__ import annotations

import http.server
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from tests.browser.conftest import TOKEN, Console, Tab, add_entry, add_session
from tests.e2e.conftest import Harness

pytestmark = pytest.mark.browser

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def _marker() -> str:
    return f"b{uuid.uuid4().hex[:10]}"


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _failed_entry(harness: Harness, fault: str = "block_prompt") -> tuple[uuid.UUID, str]:
    """An entry whose analysis fails for good once (then the emulator answers again):
    its row is failed and its message dead-lettered."""
    marker = _marker()
    entry_id, user_id = harness.make_entry(marker)
    harness.fault(kind=fault, target="analysis", contains=marker, times=1)
    message_id = harness.publish(entry_id, user_id)
    assert harness.wait_for(entry_id)["status"] == "failed"
    return entry_id, message_id


# --- the token ---------------------------------------------------------------------------


def test_requests_without_the_token_get_401(console: Console, anonymous: Tab) -> None:
    some_id = uuid.uuid4()
    pages = [
        "/",
        "/overview/live",
        "/api/overview",
        "/failures",
        "/dead-letters",
        "/dead-letters/visualizations/x",
        "/analytics",
        f"/job?id={some_id}",
        f"/jobs/entry/{some_id}",
        f"/jobs/entry/{some_id}/image/full",
        f"/jobs/session/{some_id}",
    ]
    for path in pages:
        assert console.request("GET", path).status == 401, path
    for path in ("/failures/replay", "/dead-letters/visualizations/purge"):
        reply = console.request("POST", path, form={"confirm": "yes"})
        assert reply.status == 401, path
    assert (
        console.request("GET", "/", headers={"Authorization": "Bearer wrong-token-123456"}).status
        == 401
    )
    assert (
        console.request("GET", "/", headers={"Cookie": "emotionviz_console=forged.x.y"}).status
        == 401
    )
    # The right token as a Bearer header works, for scripts.
    reply = console.request("GET", "/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status == 200 and "visualizations" in reply.json()["queues"]
    assert TOKEN not in reply.body

    # A person: the page answers 401 with the sign-in form; a wrong token stays out.
    response = anonymous.go("/failures")
    assert response.status == 401
    anonymous.screenshot("login")
    anonymous.page.fill("#token", "not-the-token-at-all")
    anonymous.page.click("#login-form button[type=submit]")
    _expect()(anonymous.page.locator(".error")).to_have_text("That token is not right.")
    anonymous.page.fill("#token", TOKEN)
    anonymous.page.click("#login-form button[type=submit]")
    anonymous.page.wait_for_url(console.url + "/failures")  # back where it was going
    cookie = next(c for c in anonymous.page.context.cookies() if c["name"] == "emotionviz_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"]


# --- the overview -------------------------------------------------------------------------


def test_overview_changes_live_as_messages_are_published_and_processed(
    harness: Harness, tab: Tab
) -> None:
    expect = _expect()
    page = tab.page
    completed_before = int(page.locator("#rows-completed").inner_text())
    ready_before = int(page.locator("#q-visualizations-ready").inner_text())
    page.evaluate("window.__same_page = true")
    harness.stop_workers()
    entries = [harness.make_entry(_marker()) for _ in range(3)]
    try:
        for entry_id, user_id in entries:
            harness.publish(entry_id, user_id)
        expect(page.locator("#q-visualizations-ready")).to_have_text(str(ready_before + 3))
    finally:
        harness.start_worker()
    expect(page.locator("#q-visualizations-ready")).to_have_text(str(ready_before), timeout=30_000)
    expect(page.locator("#rows-completed")).to_have_text(str(completed_before + 3), timeout=30_000)
    expect(page.locator("#chart-completed-total")).not_to_have_text("0")
    expect(page.locator("#live-status")).to_contain_text("updated")
    assert page.evaluate("window.__same_page") is True  # refreshed in place, never reloaded
    for entry_id, _ in entries:
        assert harness.wait_for(entry_id)["status"] == "completed"


# --- failures and dead letters ----------------------------------------------------------------


def test_failed_entries_show_their_reason_and_replay_one_or_a_selection(
    harness: Harness, tab: Tab
) -> None:
    expect = _expect()
    page = tab.page
    first, _ = _failed_entry(harness)
    second, _ = _failed_entry(harness)
    reason = "prompt was blocked by the safety filter (SAFETY)"

    tab.go("/failures?class=safety")
    for entry_id in (first, second):
        row = page.locator(f"#failed-{entry_id}")
        expect(row).to_contain_text(reason)
        expect(row).to_contain_text("safety")
    tab.go(f"/jobs/entry/{first}")
    expect(page.locator("#error")).to_contain_text(reason)
    expect(page.locator("#status")).to_have_text("failed")

    # One: the row's own button, even with another row ticked.
    tab.go("/failures?class=safety")
    page.check(f"#failed-{second} input[name=entry_id]")
    page.click(f"#failed-{first} button[name=one]")
    expect(page.locator(".flash")).to_have_text("replayed 1 failed visualizations")
    assert harness.wait_for(first, ("completed",))["status"] == "completed"
    assert harness.visualization(second)["status"] == "failed"  # type: ignore[index]

    # A selection: tick, then "Replay selected".
    tab.go("/failures?class=safety")
    expect(page.locator(f"#failed-{first}")).to_have_count(0)
    page.check(f"#failed-{second} input[name=entry_id]")
    page.click("text=Replay selected")
    expect(page.locator(".flash")).to_contain_text("replayed 1 failed visualizations")
    assert harness.wait_for(second, ("completed",))["status"] == "completed"


def test_retrying_a_dead_letter_from_the_page_completes_its_entry(
    harness: Harness, tab: Tab
) -> None:
    expect = _expect()
    page = tab.page
    entry_id, message_id = _failed_entry(harness, fault="400")
    assert any(m["message_id"] == message_id for m in harness.dead_letters())

    tab.go("/dead-letters")
    page.click(f"a:has-text('{message_id[:8]}')")
    expect(page.locator("#payload")).to_contain_text(str(entry_id))
    expect(page.locator("h1")).to_contain_text(message_id[:8])
    page.click("text=Retry this message")
    expect(page.locator(".flash")).to_have_text(
        "retried 1 dead-lettered messages on visualizations"
    )
    assert harness.wait_for(entry_id, ("completed",))["status"] == "completed"
    assert not any(m["message_id"] == message_id for m in harness.dead_letters())


# --- cross-site requests --------------------------------------------------------------------


class _HostilePage(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        page = (
            "<!doctype html><form id=f method=post action='" + self.target + "'>"
            "<input name=confirm value=yes></form>"
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hostile_site(console: Console) -> Iterator[str]:
    """Another origin on this machine whose page posts a form to the console."""
    handler = type(
        "Hostile", (_HostilePage,), {"target": console.url + "/dead-letters/visualizations/purge"}
    )
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_a_cross_site_post_is_refused(
    harness: Harness, console: Console, tab: Tab, hostile_site: str
) -> None:
    page = tab.page
    _failed_entry(harness, fault="400")
    dead_before = len(harness.dead_letters())
    assert dead_before >= 1

    # A signed-in operator opens a page of another origin that posts to the console.
    with page.expect_navigation(url=re.compile(re.escape(console.url))) as landed:
        page.goto(hostile_site)
    assert landed.value.status == 403
    assert "did not come from the console" in page.inner_text("body")
    assert len(harness.dead_letters()) == dead_before  # nothing purged

    # Each check refuses on its own: the session cookie with a wrong Origin, or the
    # right Origin without the form's token. With both right, the post goes through.
    tab.go("/dead-letters")
    session = {"Cookie": tab.cookie_header()}
    form = {"csrf": tab.csrf()}
    evil = console.request(
        "POST", "/failures/replay", form=form, headers={**session, "Origin": "http://evil.example"}
    )
    assert evil.status == 403
    no_origin = console.request("POST", "/failures/replay", form=form, headers=session)
    assert no_origin.status == 403
    same = {**session, "Origin": console.url}
    stale = console.request("POST", "/failures/replay", form={"csrf": "stale"}, headers=same)
    assert stale.status == 403
    allowed = console.request("POST", "/failures/replay", form=form, headers=same)
    assert allowed.status == 303 and allowed.headers["location"] == "/failures"
    assert len(harness.dead_letters()) == dead_before


# --- hostile text -------------------------------------------------------------------------


def _assert_inert(tab: Tab, where: str, shown: bool) -> None:
    page = tab.page
    assert page.evaluate("window.__pwned") is None, where
    scripts = page.evaluate("Array.from(document.scripts, s => s.src)")
    assert scripts == [tab.console.url + "/static/console.js"], where
    assert page.locator("img[src=x]").count() == 0, where
    assert "<script>window.__pwned" not in page.content(), where
    if shown:
        assert "<script>window.__pwned=1</script>" in page.inner_text("body"), where


def test_hostile_text_is_shown_as_text_on_every_page(harness: Harness, tab: Tab) -> None:
    entry_id, user_id = add_entry(harness, f"{HOSTILE} {_marker()}")
    session_id = add_session(harness, user_id, HOSTILE)
    with harness.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO visualizations (entry_id, user_id, status, error_message, "
                "processing_completed_at) VALUES (:e, :u, 'failed', :m, now())"
            ),
            {"e": entry_id, "u": user_id, "m": f"safety: {HOSTILE}"},
        )
    # A producer's bad message carrying the same text lands in the dead letters.
    harness.publish_envelope(
        "visualizations", "entry.created", [{"entry_id": HOSTILE, "user_id": HOSTILE}]
    )
    deadline = time.monotonic() + 15
    while not any(HOSTILE in str(m.get("args")) for m in harness.dead_letters()):
        assert time.monotonic() < deadline, "the hostile message was not dead-lettered"
        time.sleep(0.1)
    letter = next(m for m in harness.dead_letters() if HOSTILE in str(m.get("args")))
    redis_id = letter["options"]["redis_message_id"]

    pages = [
        ("/", False),
        ("/failures", True),
        ("/failures?class=safety", True),
        ("/dead-letters", True),
        (f"/dead-letters/visualizations/{redis_id}", True),
        (f"/jobs/entry/{entry_id}", True),
        (f"/jobs/session/{session_id}", True),
        ("/analytics", False),
    ]
    for path, shown in pages:
        tab.go(path)
        _assert_inert(tab, path, shown)
    tab.go("/")
    _expect()(tab.page.locator("#live-status")).to_contain_text("updated")
    _assert_inert(tab, "/ after a live refresh", False)


# --- every page, with a picture ------------------------------------------------------------------


def test_every_page_renders_and_the_picture_is_served_only_signed_in(
    harness: Harness, console: Console, tab: Tab
) -> None:
    expect = _expect()
    page = tab.page
    entry_id, user_id = harness.make_entry(_marker())
    harness.publish(entry_id, user_id)
    assert harness.wait_for(entry_id)["status"] == "completed"
    _failed_entry(harness)  # a failure and a dead letter to show
    session_id = add_session(harness, user_id, "A quiet evening after a hard week")

    tab.go("/")
    expect(page.locator("h1")).to_have_text("Overview")
    tab.screenshot("overview")
    tab.go("/failures")
    expect(page.locator("#replay-form tbody tr").first).to_be_visible()
    tab.screenshot("failures")
    tab.go("/dead-letters")
    expect(page.locator("#retry-form tbody tr").first).to_be_visible()
    tab.screenshot("dead-letters")
    page.locator("#retry-form tbody tr a").first.click()
    expect(page.locator("#payload")).to_be_visible()
    tab.screenshot("dead-letter")
    tab.go("/analytics")
    expect(page.locator("#analytics-day")).not_to_contain_text("never")
    expect(page.locator("#schedule-reconcile")).to_contain_text("UTC")
    tab.screenshot("analytics")
    tab.go(f"/jobs/session/{session_id}")
    expect(page.locator("#situation")).to_have_text("A quiet evening after a hard week")
    tab.screenshot("job-session")

    page.fill("input[name=id]", str(entry_id))
    page.click("text=Find job")
    page.wait_for_url(f"{console.url}/jobs/entry/{entry_id}")
    expect(page.locator("#status")).to_have_text("completed")
    picture = page.locator("#picture")
    expect(picture).to_be_visible()
    deadline = time.monotonic() + 10  # (wait_for_function would need 'unsafe-eval')
    while page.evaluate("document.getElementById('picture').naturalWidth") == 0:
        assert time.monotonic() < deadline, "the picture did not load"
        time.sleep(0.1)
    tab.screenshot("job-entry")

    image = page.request.get(f"{console.url}/jobs/entry/{entry_id}/image/full")
    assert image.status == 200 and image.headers["content-type"].startswith("image/")
    stored = harness.visualization(entry_id)["image_url"]  # type: ignore[index]
    assert image.body()[:4] in (b"\x89PNG", b"RIFF", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb")
    assert stored.startswith("http://media.test/m/")  # the public URL is not what is served
    assert console.request("GET", f"/jobs/entry/{entry_id}/image/full").status == 401
