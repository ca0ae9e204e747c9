"""Remove what Redis holds about a person: every message whose body names one of their
ids (ready, delayed, dead-lettered, held unacknowledged: Dramatiq's keys,
workers/messaging/redis_keys.py) and any other key of the namespace whose name or value
does (a per-person gate, a completion event on EVENTS_QUEUE, whatever a later feature
keys by person).

A walk over the whole namespace (SCAN, HSCAN, SSCAN, ZSCAN and lists in pages of
1,000: never one command over a whole big key): the erasure is rare, and a list of key
kinds to visit would miss the next kind someone adds. A queue's list (a key with a
``.msgs`` hash beside it) holds message ids only and is not read: its bodies are. A
message body removed from its ``.msgs`` hash is also removed from the list, delay set
or dead-letter set that orders it, and from every worker's acks set; a worker that
fetched it meanwhile finds no body and acknowledges nothing.

RabbitMQ is not reached: a message cannot be taken out of a RabbitMQ queue without
consuming the queue (docs/operations.md says what happens to those).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from domain.identifiers import UUID_BYTES_RE
from workers.messaging.redis_keys import BODIES_SUFFIX, DEAD_SUFFIX, acks_pattern

_SCAN_COUNT = 1000
# A list is read a page at a time: one LRANGE 0 -1 over a ready queue of a million ids
# would hold Redis (single-threaded) for the whole copy.
_LIST_PAGE = 1000


@dataclass
class RedisErasure:
    """What was removed: messages by the key that held them, and other keys or values."""

    messages: dict[str, int] = field(default_factory=dict)
    other_keys: int = 0
    other_values: int = 0

    @property
    def total_messages(self) -> int:
        return sum(self.messages.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "messages": self.total_messages,
            "messages_by_key": dict(sorted(self.messages.items())),
            "other_keys": self.other_keys,
            "other_values": self.other_values,
        }


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _names(value: bytes | str, needles: frozenset[bytes]) -> bool:
    """Whether ``value`` holds one of the ids (one pass, whatever the number of ids)."""
    raw = value.encode() if isinstance(value, str) else value
    return any(found.lower() in needles for found in UUID_BYTES_RE.findall(raw))


def erase_from_redis(
    client: redis.Redis,
    namespace: str,
    ids: Iterable[str],
    *,
    dry_run: bool = False,
    dead_letters_only: bool = False,
) -> RedisErasure:
    """Remove (or, with ``dry_run``, count) everything under ``namespace`` that names any
    of ``ids``; with ``dead_letters_only``, only dead letters (the retention purge)."""
    needles = frozenset(str(i).lower().encode() for i in ids)
    report = RedisErasure()
    if not needles:
        return report
    removed_message_ids: set[bytes] = set()
    dead_bodies = f"{DEAD_SUFFIX}{BODIES_SUFFIX}"
    for raw_key in client.scan_iter(match=f"{namespace}:*", count=_SCAN_COUNT):
        key = _text(raw_key)
        if dead_letters_only and not key.endswith(dead_bodies):
            continue
        if _names(key, needles):
            report.other_keys += 1
            if not dry_run:
                client.delete(raw_key)
            continue
        kind = _text(client.type(raw_key))
        if kind == "hash":
            found = [
                field_
                for field_, value in client.hscan_iter(raw_key, count=_SCAN_COUNT)
                if _names(value, needles) or _names(field_, needles)
            ]
            if not found:
                continue
            if key.endswith(BODIES_SUFFIX):  # a queue's message bodies
                report.messages[key.removeprefix(f"{namespace}:")] = len(found)
                removed_message_ids.update(f if isinstance(f, bytes) else f.encode() for f in found)
                if not dry_run:
                    _remove_messages(client, key.removesuffix(BODIES_SUFFIX), found)
            else:
                report.other_values += len(found)
                if not dry_run:
                    client.hdel(raw_key, *found)
        elif kind == "string":
            value = client.get(raw_key)
            if value is not None and _names(value, needles):
                report.other_keys += 1
                if not dry_run:
                    client.delete(raw_key)
        elif kind == "list":
            if client.exists(f"{key}{BODIES_SUFFIX}"):
                continue  # a queue's order: message ids only (the bodies hash is walked)
            for item in _list_items_naming(client, raw_key, needles):
                report.other_values += 1
                if not dry_run:
                    client.lrem(raw_key, 0, item)  # type: ignore[arg-type]
        elif kind == "set":
            found_members = [m for m in client.sscan_iter(raw_key) if _names(m, needles)]
            report.other_values += len(found_members)
            if found_members and not dry_run:
                client.srem(raw_key, *found_members)
        elif kind == "zset":
            found_members = [m for m, _ in client.zscan_iter(raw_key) if _names(m, needles)]
            report.other_values += len(found_members)
            if found_members and not dry_run:
                client.zrem(raw_key, *found_members)
    if removed_message_ids and not dry_run:
        for acks in client.scan_iter(match=acks_pattern(namespace), count=_SCAN_COUNT):
            client.srem(acks, *removed_message_ids)
    return report


def _list_items_naming(
    client: redis.Redis, key: bytes | str, needles: frozenset[bytes]
) -> set[bytes | str]:
    """The distinct items of a list that name one of the ids, read in pages. Items a
    consumer pops meanwhile shift the pages: one may be read twice (a set) or skipped,
    which the erasure's second sweep catches (workers/operations/erase.py)."""
    found: set[bytes | str] = set()
    start = 0
    while True:
        page = client.lrange(key, start, start + _LIST_PAGE - 1)
        found.update(item for item in page if _names(item, needles))
        if len(page) < _LIST_PAGE:
            return found
        start += _LIST_PAGE


def _remove_messages(client: redis.Redis, order_key: str, message_ids: list[bytes]) -> None:
    """The bodies, and the ids in the key that orders them (a ready queue's list, a delay
    or dead-letter queue's sorted set), in one transaction."""
    kind = _text(client.type(order_key))
    pipe = client.pipeline(transaction=True)
    pipe.hdel(f"{order_key}{BODIES_SUFFIX}", *message_ids)
    if kind == "list":
        for message_id in message_ids:
            pipe.lrem(order_key, 0, message_id)  # type: ignore[arg-type]
    elif kind == "zset":
        pipe.zrem(order_key, *message_ids)
    pipe.execute()
