"""The dead letters an operator reads and retries: ``emotionviz dlq`` and the console's
retry button."""

from __future__ import annotations

import uuid

from domain.errors import ConfigurationError
from workers import bootstrap
from workers.messaging.dead_letters import DeadLetter, DeadLetters
from workers.settings import Settings


def readable_dead_letters(settings: Settings) -> DeadLetters:
    """The dead letters on the Redis broker; a RabbitMQ deployment is refused in one line."""
    if bootstrap.rabbitmq_url(settings) is not None:
        # Reading a RabbitMQ queue means taking its messages off it; we do not.
        raise ConfigurationError(
            "dead letters on RabbitMQ are in the queue <queue>.XQ: read them in the "
            "management UI; 'emotionviz dlq purge --yes' empties it; list, show and "
            "retry need the Redis broker"
        )
    return DeadLetters(bootstrap.redis_client(), settings.redis_namespace)


def retry_dead_letters(settings: Settings, queue: str, ids: list[str] | None) -> list[DeadLetter]:
    """Back to the queue (all, or those with these message or Redis ids); a failed
    visualization row named by a letter goes back to pending first, so the worker does
    not find it failed and skip it. Returns the letters moved (the CLI and the console)."""
    dead = readable_dead_letters(settings)
    letters = [
        letter
        for letter in dead.entries(queue, limit=100_000)
        if ids is None or letter.message_id in ids or letter.redis_id in ids
    ]
    if not letters:
        return []  # DeadLetters.replay with no ids would move every letter
    entry_ids = [uuid.UUID(e) for letter in letters for e in letter.entry_ids()]
    if entry_ids:
        with bootstrap.unit_of_work() as uow:
            uow.visualizations.replay_failed(entry_ids)
            uow.commit()
    return dead.replay(queue, ids=[letter.redis_id for letter in letters])
