"""Is a body from the queue a Dramatiq message we can route? (pure: bytes in, verdict out)

Dramatiq trusts every field of an envelope. A body it cannot use in the way it expects
does not fail one message, it breaks the machinery around it: an unknown ``queue_name``
or ``options`` that is a list kill the worker thread that took it (``KeyError`` /
``AttributeError`` in ``WorkerThread.process_message``), a missing
``options.redis_message_id`` leaves the message unacknowledged for ever, ``throws`` in
the options raises inside Dramatiq's own error handler. So the consumer
(workers/messaging/consumer.py) admits a body only when every field Dramatiq or its
middleware reads has the type they assume, the queue is the one it was taken from, the
actor is declared on that queue, and the body is under ``MAX_MESSAGE_BYTES``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.redaction import redact
from domain.sanitize import one_line
from workers.messaging.redis_keys import canonical_queue

# The fields of Dramatiq's Message: nothing else may be in an envelope.
_FIELDS = {
    "queue_name",
    "actor_name",
    "args",
    "kwargs",
    "options",
    "message_id",
    "message_timestamp",
}
MAX_ID_CHARS = 200
MAX_DEPTH = 32  # of args and kwargs: ids, not documents, travel in messages

# Options read by Dramatiq or its middleware, and the JSON types they must have.
_INT = (int,)
_NUMBER = (int, float)
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "retries": _INT,
    "max_retries": _INT,
    "min_backoff": _NUMBER,
    "max_backoff": _NUMBER,
    "time_limit": _NUMBER,
    "max_age": _NUMBER,
    "eta": _NUMBER,
    "requeue_timestamp": _INT,
    "traceback": (str,),
    "pipe_ignore": (bool,),
    "notify_shutdown": (bool,),
    "pipe_target": (dict,),
}
# Options naming an actor that middleware looks up (and fails on when unknown).
_ACTOR_OPTIONS = ("on_success", "on_failure", "on_retry_exhausted")


@dataclass(frozen=True)
class Verdict:
    """``fields`` (ready for ``dramatiq.Message(**fields)``) when the body is admitted,
    else ``problem``: one line saying what is wrong."""

    fields: dict[str, Any] | None
    problem: str | None

    @property
    def admitted(self) -> bool:
        return self.fields is not None


def _reject(problem: str) -> Verdict:
    return Verdict(None, problem)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _shown(value: Any) -> str:
    """A value quoted in a reason: short, one line, no secret."""
    return one_line(redact(json.dumps(value, ensure_ascii=True)), 64)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python accepts them, JSON not


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of ``value``, counting no further than ``limit + 1``."""
    if limit < 0 or not isinstance(value, dict | list):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(item, limit - 1) for item in items), default=0)


def inspect(
    data: bytes | None,
    *,
    queue: str,
    actor_queues: Mapping[str, str],
    max_bytes: int,
    redis_id: bool = True,
) -> Verdict:
    """The verdict on ``data``, taken from ``queue``; ``actor_queues`` maps each
    declared actor to its queue. ``redis_id``: the body must carry
    ``options.redis_message_id`` (Redis only; RabbitMQ acknowledges by delivery tag)."""
    if data is None:
        return _reject("the message id has no body in the queue's hash")
    if len(data) > max_bytes:
        return _reject(f"body is {len(data)} bytes, over MAX_MESSAGE_BYTES ({max_bytes})")
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError:
        return _reject("body is not valid JSON: not UTF-8 text")
    except json.JSONDecodeError as exc:
        return _reject(f"body is not valid JSON: {exc.msg} at char {exc.pos}")
    except (ValueError, RecursionError) as exc:
        return _reject(f"body is not valid JSON: {one_line(str(exc), 80)}")
    if not isinstance(body, dict):
        return _reject(f"body is {_json_type(body)}, not a message object")
    problem = _field_problem(body) or _option_problem(body["options"], actor_queues, redis_id)
    problem = problem or _route_problem(body, queue, actor_queues)
    return _reject(problem) if problem else Verdict(body, None)


def _field_problem(body: dict[str, Any]) -> str | None:
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        return f"unknown field {_shown(unknown[0])}"
    expected = {
        "queue_name": str,
        "actor_name": str,
        "message_id": str,
        "args": list,
        "kwargs": dict,
        "options": dict,
    }
    for name, kind in expected.items():
        if name not in body:
            return f"{name} is missing"
        if not isinstance(body[name], kind):
            wanted = {str: "a string", list: "an array", dict: "an object"}[kind]
            return f"{name} is {_json_type(body[name])}, not {wanted}"
    if not body["message_id"].strip() or len(body["message_id"]) > MAX_ID_CHARS:
        return f"message_id must be 1 to {MAX_ID_CHARS} characters"
    stamp = body.get("message_timestamp", 0)
    if isinstance(stamp, bool) or not isinstance(stamp, int) or stamp < 0:
        return f"message_timestamp is {_shown(stamp)}, not milliseconds since the epoch"
    if _depth([body["args"], body["kwargs"]], MAX_DEPTH) > MAX_DEPTH:
        return f"args or kwargs nest deeper than {MAX_DEPTH} levels"
    return None


def _option_problem(
    options: dict[str, Any], actor_queues: Mapping[str, str], need_redis_id: bool
) -> str | None:
    redis_id = options.get("redis_message_id")
    if need_redis_id and (
        not isinstance(redis_id, str) or not redis_id or len(redis_id) > MAX_ID_CHARS
    ):
        return "options.redis_message_id is missing or not a string of 1 to 200 characters"
    if "throws" in options:
        return "options.throws cannot be set in a message (it names exception classes)"
    for name, kinds in _OPTION_TYPES.items():
        value = options.get(name)
        if value is None:
            continue
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            return f"options.{name} is {_json_type(value)} {_shown(value)}, of the wrong type"
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            return f"options.{name} is negative"
    for name in _ACTOR_OPTIONS:
        value = options.get(name)
        if value is not None and value not in actor_queues:
            return f"options.{name} names no declared actor: {_shown(value)}"
    return None


def _route_problem(body: dict[str, Any], queue: str, actor_queues: Mapping[str, str]) -> str | None:
    if body["queue_name"] != queue:
        return (
            f"queue_name {_shown(body['queue_name'])} is not the queue it was taken from ({queue})"
        )
    actor_queue = actor_queues.get(body["actor_name"])
    if actor_queue is None:
        return f"actor_name {_shown(body['actor_name'])} is not a declared actor"
    if actor_queue != canonical_queue(queue):
        return f"actor {_shown(body['actor_name'])} consumes queue {actor_queue}, not {queue}"
    return None


def summary(data: bytes | None) -> dict[str, Any]:
    """What a log line may say about a body: its size and its first characters,
    redacted (never the whole body, whatever its size)."""
    if data is None:
        return {"bytes": 0}
    start = data[:120].decode("utf-8", errors="replace")
    return {"bytes": len(data), "body_start": one_line(redact(start), 80)}
