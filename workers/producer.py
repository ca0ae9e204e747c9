"""Publishing messages, for upstream Python services and our own commands.

- ``publish(msg)``: one message.
- ``publish_many(msgs)``: many, pipelined into one Redis round trip per batch.
- ``publish_on_commit(session, msg)``: only once the caller's SQLAlchemy transaction
  commits, so a worker never sees an id whose row is not visible yet, and a rolled-back
  entry is never published.

Non-Python producers write the same envelope to Redis: see docs/messages.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import event
from sqlalchemy.orm import Session

from domain.messages import MessageV1

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

    def publish_many(self, messages: Iterable[MessageV1]) -> list[str]:
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
                    queue = f"{self.broker.namespace}:{msg.queue_name}"
                    pipe.hset(f"{queue}.msgs", redis_id, msg.encode())
                    pipe.rpush(queue, redis_id)
                    ids.append(msg.message_id)
                pipe.execute()
        return ids

    def publish_on_commit(self, session: Session, message: MessageV1) -> None:
        def _after_commit(_session: Session) -> None:
            self.publish(message)

        event.listen(session, "after_commit", _after_commit, once=True)
