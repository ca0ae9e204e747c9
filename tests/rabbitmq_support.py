"""A RabbitMQ of this test run's own: one vhost per use, deleted afterwards.

Our actors' queue names are fixed (domain/messages.py) and RabbitMQ has one queue
namespace per vhost, so two runs on one server would consume each other's messages in
a shared vhost. A vhost per use (created with ``rabbitmqctl``; the management API is
not enabled on the loopback server) keeps them apart. Without ``rabbitmqctl`` the
default vhost is used and its queues are deleted afterwards: parallel runs may collide
then, and the fixture says so in the skip/warn line.

No RabbitMQ answering: the tests skip with the reason, or fail when ``CI`` is set (CI
starts RabbitMQ before the tests, so silence there is a defect, not a machine's kind).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions
import pytest

from domain.messages import QUEUES

BASE_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")


def with_vhost(vhost: str) -> str:
    return f"{BASE_URL.rstrip('/')}/{urllib.parse.quote(vhost, safe='')}"


def answers(url: str) -> str | None:
    """None when RabbitMQ at ``url`` accepts a connection, else why not."""
    params = pika.URLParameters(url)
    params.connection_attempts, params.socket_timeout, params.blocked_connection_timeout = 1, 2, 2
    try:
        pika.BlockingConnection(params).close()
    except pika.exceptions.AMQPError as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


def require_rabbitmq() -> None:
    problem = answers(with_vhost("/"))
    if problem is None:
        return
    message = f"no RabbitMQ answers at {BASE_URL} (TEST_RABBITMQ_URL): {problem}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI starts RabbitMQ before the tests")
    pytest.skip(message)


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def rabbitmq_vhost(label: str) -> Iterator[str]:
    """An amqp URL on a fresh vhost (or the default one, emptied afterwards)."""
    require_rabbitmq()
    vhost = f"evt-{label}-{uuid.uuid4().hex[:8]}"
    try:
        if shutil.which("rabbitmqctl") is None:
            raise FileNotFoundError("rabbitmqctl")
        _ctl("add_vhost", vhost)
        _ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        warnings.warn(
            f"no vhost of our own ({exc}): using the default vhost; parallel runs may collide",
            stacklevel=2,
        )
        url = with_vhost("/")
        try:
            yield url
        finally:
            delete_queues(url)
        return
    try:
        yield with_vhost(vhost)
    finally:
        _ctl("delete_vhost", vhost)


def delete_queues(url: str) -> None:
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        for queue in QUEUES:
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                channel.queue_delete(name)


def peek(url: str, queue: str) -> list[tuple[bytes, dict[str, Any]]]:
    """The bodies (and headers) in ``queue``, left in place: got without ack, then
    returned to the queue when the connection closes."""
    found: list[tuple[bytes, dict[str, Any]]] = []
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            found.append((body, dict(properties.headers or {})))
    return found


def publish_raw(url: str, queue: str, body: bytes) -> None:
    """A body written as a non-Python producer would, straight onto ``queue``."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        connection.channel().basic_publish("", queue, body)


def ready_count(url: str, queue: str) -> int:
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        declared = connection.channel().queue_declare(queue, passive=True)
        return int(declared.method.message_count)


def vhost_of(url: str) -> str:
    return str(pika.URLParameters(url).virtual_host)


def require_rabbitmqctl() -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed: queue types and policies cannot be read")


def queue_types(url: str) -> dict[str, str]:
    """Each queue of ``url``'s vhost and its type (classic, quorum), as RabbitMQ says."""
    require_rabbitmqctl()
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost_of(url), "name", "type"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    rows = [line.split("\t") for line in listed.splitlines()[1:] if "\t" in line]
    return {name: kind for name, kind in rows}


def limit_length(url: str, queue: str, max_length: int) -> None:
    """A policy on ``queue``: past ``max_length`` messages RabbitMQ refuses (nacks) a
    publish (as an operator's length limit would)."""
    require_rabbitmqctl()
    definition = f'{{"max-length": {max_length}, "overflow": "reject-publish"}}'
    _ctl(
        "set_policy", "-p", vhost_of(url), "--apply-to", "queues", "limit", f"^{queue}$", definition
    )


def fill_until_refused(url: str, queue: str, limit: int = 20) -> int:
    """Publish with confirms until RabbitMQ nacks one; how many it took."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        for taken in range(limit):
            try:
                channel.basic_publish("", queue, b"{}", mandatory=True)
            except pika.exceptions.NackError:
                return taken
    raise AssertionError(f"RabbitMQ took {limit} messages past the length limit")
