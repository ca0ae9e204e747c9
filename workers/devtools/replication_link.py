"""A TCP relay on the replication link between a Redis replica and its primary, which a
test can cut one way: ``freeze()`` drops what the primary sends from then on, so the
writes made after it exist on the primary only. Killing the primary then loses them
for real, as asynchronous replication can in production (workers/devtools/sentinel.py;
tests/ha/). Threads of the calling process, closed with it. Development tooling."""

from __future__ import annotations

import contextlib
import socket
import threading

CHUNK = 65536


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ReplicationLink:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._frozen = threading.Event()
        self._closed = threading.Event()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="replication-link", daemon=True).start()

    def freeze(self) -> None:
        """From now on, what the primary sends the replica is dropped."""
        self._frozen.set()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                replica, _ = self._server.accept()
            except OSError:
                return
            try:
                primary = socket.create_connection(("127.0.0.1", self.target_port), 2)
                primary.settimeout(None)
            except OSError:
                replica.close()
                continue
            with self._lock:
                self._sockets += [replica, primary]
            for source, sink, droppable in ((primary, replica, True), (replica, primary, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, droppable), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, droppable: bool) -> None:
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                if droppable and self._frozen.is_set():
                    continue  # the replica never gets it
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()
