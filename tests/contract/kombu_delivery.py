"""One message delivered by kombu's Redis transport, left unacknowledged: what the contract tests hold in hand."""

from __future__ import annotations

import time
from typing import Any

from kombu import Connection, Consumer, Queue


def deliver_one(conn: Connection, queue: str) -> Any:
    """One message of ``queue`` delivered by kombu's Redis transport and left unacknowledged (a worker's
    delivery with prefetch 1)."""
    got: list[Any] = []
    channel = conn.channel()
    consumer = Consumer(channel, queues=[Queue(queue)], callbacks=[lambda body, message: got.append(message)],
                        accept=["json"])
    channel.basic_qos(0, 1, False)
    consumer.consume()
    end = time.monotonic() + 60  # a generous bound: a busy machine only makes it later
    while not got:
        assert time.monotonic() < end, "kombu delivered nothing"
        try:
            conn.drain_events(timeout=1)
        except TimeoutError:
            continue
    consumer.cancel()
    return got[0]
