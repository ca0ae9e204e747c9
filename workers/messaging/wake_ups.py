"""Wake-ups: an idle consumer learns of a new message at once, without polling fast.

Dramatiq's Redis consumer polls an empty queue with a backoff growing to the worker
timeout (1 s), so the first message after a quiet spell waits up to a second. Here an
enqueue onto an empty queue also PUBLISHes the queue's name on one channel per
namespace (``channel``), in the same Lua script (workers/messaging/announced.py). Each
worker process keeps one subscriber thread (``WakeUps``) that sets the events of the
consumers of that queue; an idle consumer waits on its event instead of sleeping
(consumer.py). The backoff stays as the fallback for messages nobody announces: a
producer that writes the envelope itself, a dead worker's messages put back by
Dramatiq's heartbeat sweep, any time the subscriber is disconnected.

The subscriber never stops the process: it reconnects with a backoff (one warning per
outage, one line when it is back) and, once subscribed again, wakes every consumer (a
wake-up published meanwhile was lost). It is not watched by the watchdog: losing it
costs latency (the 1 s fallback), never work, and the next consumer that waits starts
it again if it ever died.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from workers.logging import get_logger

log = get_logger("emotionviz.wake_ups")

# How long one read of the subscription blocks: only bounds how soon close() is seen.
LISTEN_S = 5.0
# A PING on the subscription after this much silence, so a dead connection is found.
HEALTH_CHECK_S = 30
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.1, 5.0
# A subscriber that died (a bug) is started again at most this often.
RESTART_EVERY_S = 10.0


def channel(namespace: str) -> str:
    """The channel a wake-up is published on; the message is the queue's name as it
    was enqueued on (``intake``, ``intake.DQ``)."""
    return f"{namespace}:__wake_ups__"


def client_name(namespace: str) -> str:
    """The subscriber connection's CLIENT SETNAME (seen in CLIENT LIST)."""
    return f"{namespace}:wake-ups"


class WakeUps:
    """The wake-up subscriber of one broker (one per worker process), started by the
    first consumer that registers."""

    def __init__(self, pool: redis.ConnectionPool, namespace: str) -> None:
        # Its own connection (a subscribed connection serves nothing else), named, and
        # health-checked while the channel is silent.
        kwargs: dict[str, Any] = {
            **pool.connection_kwargs,
            "client_name": client_name(namespace),
            "health_check_interval": HEALTH_CHECK_S,
            # No silent retries inside redis-py: a lost connection comes to _run, which
            # reconnects, logs and wakes the consumers.
            "retry": Retry(NoBackoff(), 0),
            "retry_on_timeout": False,
        }
        kwargs.pop("retry_on_error", None)
        if issubclass(pool.connection_class, redis.Connection):  # TCP, not a Unix socket
            kwargs["socket_keepalive"] = True
        self._pool = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        self.channel = channel(namespace)
        self._events: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = 0.0
        self.subscriptions = 0  # how many times the channel was subscribed (tests, logs)

    # --- consumers ------------------------------------------------------------------

    def register(self, queue_name: str) -> threading.Event:
        """An event set whenever a wake-up for ``queue_name`` arrives."""
        event = threading.Event()
        with self._lock:
            self._events.setdefault(queue_name, set()).add(event)
        self.ensure_running()
        return event

    def unregister(self, queue_name: str, event: threading.Event) -> None:
        with self._lock:
            self._events.get(queue_name, set()).discard(event)

    def ensure_running(self) -> None:
        """Start the subscriber if it is not running (first use, or it died)."""
        thread = self._thread
        if (thread is not None and thread.is_alive()) or self._closing.is_set():
            return
        with self._lock:
            thread = self._thread
            if thread is not None and thread.is_alive():
                return
            now = time.monotonic()
            if thread is not None:
                if now - self._started_at < RESTART_EVERY_S:
                    return
                log.error("wake-up subscriber had died; starting it again")
            self._started_at = now
            self._thread = threading.Thread(target=self._run, name="wake-ups", daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        self._closing.set()
        self._pool.disconnect()  # ends the subscriber's read at once
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=LISTEN_S + 1)
        self._pool.disconnect()

    # --- the subscriber -------------------------------------------------------------

    def _wake(self, queue_name: str) -> None:
        with self._lock:
            events = list(self._events.get(queue_name, ()))
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        with self._lock:
            events = [event for group in self._events.values() for event in group]
        for event in events:
            event.set()

    def _run(self) -> None:
        failures = 0
        while not self._closing.is_set():
            pubsub = redis.Redis(connection_pool=self._pool).pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self.channel)
                while not self._closing.is_set():
                    message = pubsub.get_message(timeout=LISTEN_S)
                    if message is None:
                        continue
                    if message["type"] == "message":
                        self._wake(_text(message["data"]))
                    elif message["type"] == "subscribe":
                        # Subscribed (again, after redis-py reconnected by itself):
                        # wake-ups sent while we were away are lost, so look now.
                        self.subscriptions += 1
                        self._wake_all()
                        if failures:
                            log.info("wake-up channel back", after_failures=failures)
                            failures = 0
            except Exception as exc:  # noqa: BLE001 - never stop: the fallback poll works
                if self._closing.is_set():
                    break
                if failures == 0:
                    log.warning(
                        "wake-up channel lost; idle consumers poll every second until it is back",
                        reason=f"{type(exc).__name__}: {str(exc)[:200]}",
                    )
                failures += 1
                self._closing.wait(min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2 ** min(failures, 6)))
            finally:
                with contextlib.suppress(Exception):  # it is being dropped anyway
                    pubsub.close()


def _text(data: bytes | str) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data
