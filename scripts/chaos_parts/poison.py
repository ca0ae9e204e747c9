"""The emulator, plus the poison entry: whenever a request for it arrives, the worker
process that sent it is killed with SIGKILL before any answer, every time (as an entry
whose processing crashes the process would)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from chaos_parts.procs import socket_owner
from workers.devtools.emulator import EmulatorHandler, EmulatorServer, EmulatorState
from workers.devtools.emulator.content import request_text


class PoisonServer(EmulatorServer):
    def __init__(
        self, state: EmulatorState, marker: str, candidates: Callable[[], list[int]]
    ) -> None:
        super().__init__(("127.0.0.1", 0), state)
        self.RequestHandlerClass = PoisonHandler
        self.marker = marker
        self.candidates = candidates
        self.crashes: list[float] = []
        self.unresolved = 0
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: the clients of this server get killed mid-request on purpose."""

    def kill_sender(self, client_port: int) -> None:
        pid = socket_owner(client_port, self.server_address[1], self.candidates())
        with self.lock:
            if pid is None:
                self.unresolved += 1
                return
            os.kill(pid, signal.SIGKILL)
            self.crashes.append(time.time())


class PoisonHandler(EmulatorHandler):
    server: PoisonServer

    def _generate(self, model: str, url: Any, body: dict[str, Any]) -> None:
        if self.server.marker in request_text(body):
            self.server.kill_sender(self.client_address[1])
            self.close_connection = True
            return
        super()._generate(model, url, body)


def start(state: EmulatorState, marker: str, candidates: Callable[[], list[int]]) -> PoisonServer:
    server = PoisonServer(state, marker, candidates)
    threading.Thread(target=server.serve_forever, name="emulator", daemon=True).start()
    return server
