"""Counts a worker process's Redis round trips (loaded by real workers as a service module).

Importing it wraps redis-py's ``send_packed_command``: one call is one round trip (a command
sent alone, or a pipeline). A trip is counted by what it carries: kombu's unacknowledged
bookkeeping (``unacked`` keys), a ``state.lua`` call (``EVALSHA``), or both. ``itest.trips``
writes the counts so far to ``<TRADEFLOW_KEY_PREFIX>:trips``.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import redis
from redis.connection import AbstractConnection

from engine.service import Transition, action

#: Round trips of this process by what they carried.
TRIPS: Counter[str] = Counter()

_send = AbstractConnection.send_packed_command


def _counted(self: Any, command: Any, check_health: bool = True) -> None:
    data = command if isinstance(command, bytes | bytearray) else b"".join(bytes(part) for part in command)
    kombu, engine = b"unacked" in data, b"EVALSHA" in data
    if kombu or engine:
        TRIPS["kombu+engine" if kombu and engine else "kombu" if kombu else "engine"] += 1
    return _send(self, command, check_health)


AbstractConnection.send_packed_command = _counted  # type: ignore[method-assign]


@action("itest", "trips")
def trips(payload: dict[str, Any]) -> Transition:
    """Writes this process's round trips so far (the counts before this step's own) to ``<prefix>:trips``."""
    counts = dict(TRIPS)
    client = redis.Redis.from_url(os.environ["TRADEFLOW_REDIS_URL"])
    key = f"{os.environ['TRADEFLOW_KEY_PREFIX']}:trips"
    client.delete(key)
    if counts:
        client.hset(key, mapping=counts)
    client.close()
    return Transition("ok")
