"""A local webhook receiver for tests and benchmarks: an HTTP server that verifies the
Standard Webhooks signature of every request (its own implementation of the
convention, not the sender's) and records what it received.

``respond`` decides each answer from the event id and how many times that id came
(1, 2, ...): 204 by default; a test makes a receiver fail the first attempts, or
every one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The convention's tolerance for a timestamp away from the receiver's clock.
TOLERANCE_S = 300


@dataclass(frozen=True)
class Received:
    event_id: str
    attempt: int  # 1 for the first request with this id
    at: float  # time.time() when the request was read
    body: dict[str, Any]
    status: int  # what the receiver answered


def verify(secret: str, headers: dict[str, str], body: bytes, now: float) -> str | None:
    """None if the request is signed per Standard Webhooks with ``secret``, else why not."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        return "a webhook header is missing"
    if not stamp.isdigit() or abs(now - int(stamp)) > TOLERANCE_S:
        return "timestamp missing or outside the tolerance"
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = base64.b64encode(
        hmac.new(
            key, msg_id.encode() + b"." + stamp.encode() + b"." + body, hashlib.sha256
        ).digest()
    ).decode()
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return None
    return "no valid v1 signature"


@dataclass
class WebhookReceiver:
    secret: str
    respond: Callable[[str, int], int] = lambda _id, _attempt: 204
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # reasons of badly signed requests
    lock: threading.RLock = field(default_factory=threading.RLock)  # wait_until reads under it
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        now = time.time()
        problem = verify(self.secret, headers, body, now)
        with self.lock:
            if problem is not None:
                self.rejected.append(problem)
                self.arrived.notify_all()
                return 401
            event_id = headers["webhook-id"]
            attempt = 1 + sum(1 for r in self.received if r.event_id == event_id)
            status = self.respond(event_id, attempt)
            self.received.append(Received(event_id, attempt, now, json.loads(body), status))
            self.arrived.notify_all()
            return status

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def wait_until(self, condition: Callable[[WebhookReceiver], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not condition(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.arrived.wait(left)
            return True


def serve(receiver: WebhookReceiver, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve ``receiver`` on a free port in a daemon thread; the caller shuts it down
    (``server.shutdown(); server.server_close()``). ``server.server_port`` is its port."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.handle(headers, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True).start()
    return server
