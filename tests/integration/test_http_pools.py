"""One HTTP pool per worker thread (workers/providers/http_pools.py), over real HTTP:
each thread keeps its own connection alive, and no thread's calls touch another's pool."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx2
import pytest

from workers.providers.http_pools import PerThreadTransport

pytestmark = pytest.mark.integration


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    peers: set[tuple[str, int]] = set()

    def do_GET(self) -> None:
        _Handler.peers.add(self.client_address)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    _Handler.peers = set()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_each_thread_keeps_one_connection_of_its_own(server_url: str) -> None:
    transport = PerThreadTransport()
    client = httpx2.Client(transport=transport)
    answers: list[bytes] = []

    def calls() -> None:
        for _ in range(5):
            answers.append(client.get(server_url).content)

    threads = [threading.Thread(target=calls) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert answers == [b"ok"] * 15
    assert transport.pools() == 0  # closed with the client
    assert len(_Handler.peers) == 3  # 15 calls, one kept-alive connection per thread


def test_a_thread_reuses_its_pool_and_a_new_thread_gets_its_own(server_url: str) -> None:
    transport = PerThreadTransport()
    with httpx2.Client(transport=transport) as client:
        client.get(server_url)
        client.get(server_url)
        assert transport.pools() == 1
        other = threading.Thread(target=lambda: client.get(server_url))
        other.start()
        other.join()
        assert transport.pools() == 2
    assert len(_Handler.peers) == 2
