"""Step messages written straight onto Celery's Redis queue lists.

When the broker is the Redis that holds the engine's state, a step message need not go
through ``app.send_task`` (a producer, a routing-table read and a connection per publish):
the engine writes the same message Celery would, onto the same list, **inside the Lua script
that applies the transition**. Moving an instance on and enqueueing its next step then cost
one Redis round trip, and they happen together or not at all: no window where a transition
is applied but its next step was never sent.

The message is Celery's task protocol 2 in kombu's Redis envelope (json, base64 body), as
``send_task`` writes it; a test compares the two field by field. Any other broker (RabbitMQ,
another Redis) uses :class:`engine.runtime.messages.CeleryEnqueuer`.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from bisect import bisect
from collections.abc import Sequence
from typing import Any

import redis

from engine.runtime.messages import PRIORITY_CONTINUE, Envelope, StepMessage

#: kombu's separator between a queue name and its priority suffix.
PRIORITY_SEPARATOR = "\x06\x16"
DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class RedisQueueEnqueuer:
    """Builds Celery messages for the Redis broker's queue lists, and pushes them when asked."""

    def __init__(self, client: redis.Redis, key_prefix: str = "",
                 priority_steps: Sequence[int] = DEFAULT_PRIORITY_STEPS) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.priority_steps = sorted(priority_steps)
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self.reply_to = str(uuid.uuid4())

    @classmethod
    def for_app(cls, app: Any, client: redis.Redis) -> RedisQueueEnqueuer:
        """One that writes where ``app``'s workers read (its broker key prefix and priority steps)."""
        options = app.conf.broker_transport_options or {}
        return cls(client, options.get("global_keyprefix", ""), options.get("priority_steps", DEFAULT_PRIORITY_STEPS))

    def queue_key(self, queue: str, priority: int) -> str:
        """The list kombu's Redis transport reads ``queue`` at ``priority`` from."""
        step = self.priority_steps[max(bisect(self.priority_steps, priority) - 1, 0)]
        name = f"{queue}{PRIORITY_SEPARATOR}{step}" if step else queue
        return f"{self.key_prefix}{name}"

    def queue_heads(self, queue: str) -> tuple[int, list[str]]:
        """Messages waiting in ``queue`` (every priority), and the instance ids of the oldest one of
        each priority's list (one pipelined round trip; what the console's queue metrics read)."""
        pipe = self.client.pipeline(transaction=False)
        for step in self.priority_steps:
            key = self.queue_key(queue, step)
            pipe.llen(key)
            pipe.lindex(key, -1)
        answers = pipe.execute()
        oldest = [iid for raw in answers[1::2] if (iid := _instance_of(raw)) is not None]
        return sum(int(n) for n in answers[0::2]), oldest

    def envelope(self, message: StepMessage, priority: int = PRIORITY_CONTINUE) -> Envelope:
        """The message as it goes on the list: the key and the JSON to LPUSH there."""
        task_id = str(uuid.uuid4())
        args = message.args
        body = json.dumps([args, {}, _EMBED]).encode()
        payload = {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py", "task": message.task, "id": task_id, "shadow": None, "eta": None,
                "expires": None, "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
                "root_id": task_id, "parent_id": None, "argsrepr": repr(args), "kwargsrepr": "{}",
                "origin": self.origin, "ignore_result": True, "replaced_task_nesting": 0,
                "stamped_headers": None, "stamps": {},
            },
            "properties": {
                "correlation_id": task_id, "reply_to": self.reply_to, "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": message.queue}, "priority": priority,
                "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
            },
        }
        return Envelope(self.queue_key(message.queue, priority), json.dumps(payload))

    def enqueue(self, message: StepMessage, priority: int = PRIORITY_CONTINUE) -> None:
        """Push ``message`` now (one LPUSH)."""
        envelope = self.envelope(message, priority)
        self.client.lpush(envelope.key, envelope.body)


def _instance_of(raw: bytes | str | None) -> str | None:
    """The instance id a queued step message is for (None when it is not one of ours)."""
    if not raw:
        return None
    try:
        return str(json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None
