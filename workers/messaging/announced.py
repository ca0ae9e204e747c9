"""Enqueue, announced: the body into the queue's hash, its id onto the queue's list and,
when that push found the list empty, the queue's name PUBLISHed on the wake-up channel
(workers/messaging/wake_ups.py): one Lua script, one round trip.

Only a push onto an empty list is announced, and that is enough: a consumer waits only
after clearing its wake-up and then fetching nothing, so its list was empty; the first
push after that fetch finds the list empty and wakes it. Later pushes find messages
waiting, which a woken consumer takes anyway. So under load, when the lists are rarely
empty, nothing is published, and idle subscribers are not woken for nothing. (A push
nobody announces, by a producer that writes the envelope itself or by Dramatiq's sweep
of a dead worker's messages, leaves the list non-empty: the announced pushes that follow
it, until a consumer's fallback poll drains it, wake nobody either.)

The keys are Dramatiq's (redis_keys.py), written as its enqueue command writes them;
what its command does besides (a heartbeat for the enqueuing process, a one in a
thousand chance of queue maintenance) is done by every consumer's fetch anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from workers.messaging.redis_keys import queue_keys

# KEYS[1] the queue's list, KEYS[2] its bodies; ARGV[1] the wake-up channel, ARGV[2] the
# queue's name, then id, body, id, body... Returns 1 if it published, 0 if not, or the
# error of a refused PUBLISH (pcall: the messages are in, whatever PUBLISH says).
_ENQUEUE_ANNOUNCED = """
local was_empty = false
for i = 3, #ARGV, 2 do
    redis.call("hset", KEYS[2], ARGV[i], ARGV[i + 1])
    if redis.call("rpush", KEYS[1], ARGV[i]) == 1 then
        was_empty = true
    end
end
if not was_empty then
    return 0
end
local sent = redis.pcall("publish", ARGV[1], ARGV[2])
if type(sent) == "table" and sent.err then
    return sent.err
end
return 1
"""

Row = tuple[str, str, bytes]  # queue name as enqueued on, redis message id, body


@dataclass(frozen=True)
class Outcome:
    announced: list[str]  # queues whose wake-up was published
    refused: str | None  # why Redis refused a PUBLISH, if it did


class AnnouncedEnqueue:
    def __init__(self, client: redis.Redis, namespace: str, channel: str) -> None:
        self.client, self.namespace, self.channel = client, namespace, channel
        self.script = client.register_script(_ENQUEUE_ANNOUNCED)

    def __call__(self, rows: Sequence[Row]) -> Outcome:
        """Enqueue ``rows``: one script call per queue, in one round trip."""
        by_queue: dict[str, list[bytes | str]] = {}
        for queue_name, redis_id, body in rows:
            by_queue.setdefault(queue_name, []).extend((redis_id, body))
        if len(by_queue) == 1:  # the common case: the Script call loads it if need be
            [(queue_name, args)] = by_queue.items()
            result = self.script(self._keys(queue_name), self._args(queue_name, args))
            return self._outcome([queue_name], [result])
        results = self._pipelined(by_queue)
        return self._outcome(list(by_queue), results)

    def _pipelined(self, by_queue: dict[str, list[bytes | str]]) -> list[Any]:
        for attempt in (1, 2):
            with self.client.pipeline(transaction=False) as pipe:
                # EVALSHA, not the Script object: on a pipeline, that first costs a
                # SCRIPT EXISTS round trip.
                for queue_name, args in by_queue.items():
                    keys = self._keys(queue_name)
                    pipe.evalsha(self.script.sha, len(keys), *keys, *self._args(queue_name, args))
                results: list[Any] = pipe.execute(raise_on_error=False)
            missing = any(isinstance(r, redis.exceptions.NoScriptError) for r in results)
            if missing and attempt == 1:
                # Redis restarted or flushed its scripts: none of these calls ran.
                self.script.sha = self.client.script_load(_ENQUEUE_ANNOUNCED)
                continue
            for result in results:
                if isinstance(result, Exception):
                    raise result
            return results
        raise AssertionError("unreachable")  # pragma: no cover

    def _keys(self, queue_name: str) -> list[str]:
        keys = queue_keys(self.namespace, queue_name)
        return [keys.ready, keys.ready_bodies]

    def _args(self, queue_name: str, pairs: list[bytes | str]) -> list[bytes | str]:
        return [self.channel, queue_name, *pairs]

    @staticmethod
    def _outcome(queues: list[str], results: list[Any]) -> Outcome:
        announced = [q for q, r in zip(queues, results, strict=True) if r == 1]
        refused = [r for r in results if isinstance(r, bytes | str)]
        if not refused:
            return Outcome(announced, None)
        reason = refused[0]
        return Outcome(
            announced, reason.decode(errors="replace") if isinstance(reason, bytes) else reason
        )
