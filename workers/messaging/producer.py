"""The producer: the one object that sends messages to the broker.

- ``publish(msg, delay_ms=None)``: one message (deferrals pass a delay).
- ``publish_many(msgs)``: many, pipelined into one Redis round trip per batch.

Messages that follow a database change go through ``UnitOfWork.publish`` (db/uow.py),
which calls this after commit; upstream services use workers/producer_api.py, which
does the same. Non-Python producers write the same envelope to Redis:
docs/messages.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from domain.messages import MessageV1
from workers.messaging.redis_keys import queue_keys

PIPELINE_BATCH = 500


def envelope(message: MessageV1) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=message.queue_name,
        actor_name=message.actor_name,
        args=(message.to_payload(),),
        kwargs={},
        options={},
        message_id=str(uuid.uuid4()),
        message_timestamp=int(time.time() * 1000),
    )


class Producer:
    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    def publish(self, message: MessageV1, *, delay_ms: int | None = None) -> str:
        return str(self.broker.enqueue(envelope(message), delay=delay_ms).message_id)

    def publish_many(self, messages: Sequence[MessageV1]) -> list[str]:
        items = list(messages)
        if not isinstance(self.broker, RedisBroker):
            return [self.publish(m) for m in items]
        ids: list[str] = []
        client = self.broker.client
        for start in range(0, len(items), PIPELINE_BATCH):
            with client.pipeline(transaction=False) as pipe:
                for item in items[start : start + PIPELINE_BATCH]:
                    msg = envelope(item)
                    # Exactly what the broker's enqueue script does: the body in the
                    # queue's hash under a unique id, that id pushed on the queue list.
                    redis_id = str(uuid.uuid4())
                    msg = msg.copy(options={"redis_message_id": redis_id})
                    keys = queue_keys(self.broker.namespace, msg.queue_name)
                    pipe.hset(keys.ready_bodies, redis_id, msg.encode())
                    pipe.rpush(keys.ready, redis_id)
                    ids.append(msg.message_id)
                pipe.execute()
        return ids
