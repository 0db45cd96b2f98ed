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
import re
import socket
import uuid
from bisect import bisect
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import redis

from engine.runtime.messages import PRIORITY_CONTINUE, Envelope, StepKey, StepMessage, TakenStep

#: kombu's separator between a queue name and its priority suffix.
PRIORITY_SEPARATOR = "\x06\x16"
DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
#: kombu's hash of delivered, unacknowledged messages (delivery tag -> message) and its index by time.
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"
#: A step message's arguments as Celery writes them in its headers (``argsrepr``), in a queue list or
#: in kombu's unacked hash: ['<instance id>', '<node>', seq, attempt].
_STEP_ARGS = re.compile(rb"\"argsrepr\":\s*\"\['([^']+)', '([^']+)', (\d+), (\d+)\]\"")
#: Messages read per LRANGE / HSCAN when looking into the queues.
SCAN_CHUNK = 2000


class RedisQueueEnqueuer:
    """Builds Celery messages for the Redis broker's queue lists, and pushes them when asked."""

    def __init__(self, client: redis.Redis, key_prefix: str = "",
                 priority_steps: Sequence[int] = DEFAULT_PRIORITY_STEPS) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.priority_steps = sorted(priority_steps)
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self.reply_to = str(uuid.uuid4())
        self._take = client.register_script((Path(__file__).parent / "lua" / "take.lua").read_text())

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

    def queue_keys(self, queue: str) -> list[str]:
        """Every list ``queue``'s messages wait in (one per priority step)."""
        return list(dict.fromkeys(self.queue_key(queue, step) for step in self.priority_steps))

    def count(self, queues: Iterable[str]) -> int:
        """Messages waiting in ``queues`` plus every delivered, unacknowledged message (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            for key in self.queue_keys(queue):
                pipe.llen(key)
        pipe.hlen(self.key_prefix + UNACKED)
        return sum(int(n) for n in pipe.execute())

    def pending(self, queues: Iterable[str]) -> dict[StepKey, float]:
        """The step messages waiting in ``queues`` (0.0) or delivered and unacknowledged (delivery time).

        Reads the lists in chunks and then kombu's unacked hash: a message moves from a list to
        the hash when a worker takes it, so reading in that order finds it at least once unless
        it is in the worker's hands between the two (the caller confirms a miss a second time).
        """
        found: dict[StepKey, float] = {}
        for queue in queues:
            for key in self.queue_keys(queue):
                start = 0
                while True:
                    chunk = self.client.lrange(key, start, start + SCAN_CHUNK - 1)
                    for raw in chunk:
                        step = _step_of(raw)
                        if step is not None:
                            found.setdefault(step, 0.0)
                    if len(chunk) < SCAN_CHUNK:
                        break
                    start += SCAN_CHUNK
        delivered = {_text(tag): float(score) for tag, score in
                     self.client.zrange(self.key_prefix + UNACKED_INDEX, 0, -1, withscores=True)}
        for tag, raw in self.client.hscan_iter(self.key_prefix + UNACKED, count=SCAN_CHUNK):
            step = _step_of(raw)
            if step is not None:
                found[step] = delivered.get(_text(tag), 0.0) or found.get(step, 0.0)
        return found

    def queue_heads(self, queue: str) -> tuple[int, list[str]]:
        """Messages waiting in ``queue`` (every priority), and the instance ids of the oldest one of
        each priority's list (one pipelined round trip; what the console's queue metrics read)."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.queue_keys(queue):
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

    def take(self, queue: str, count: int) -> list[TakenStep]:
        """Pop up to ``count`` of ``queue``'s waiting messages, in the order kombu would deliver them
        (priority lists first to last, oldest first), in one round trip.

        Taken messages leave the broker: they are in no list and not among kombu's unacknowledged
        ones, so the caller starts them at once or gives them back (:meth:`give_back`); a
        process that dies in between leaves them to the reconciliation (queued, found nowhere).
        """
        flat = self._take(keys=self.queue_keys(queue), args=[count])
        return [_taken(_text(key), raw) for key, raw in zip(flat[0::2], flat[1::2], strict=True)]

    def give_back(self, taken: Sequence[TakenStep]) -> None:
        """Put ``taken`` messages back where they were, at the head of their lists (next to be delivered)."""
        if not taken:
            return
        pipe = self.client.pipeline(transaction=False)
        for item in reversed(taken):
            pipe.rpush(item.key, item.raw)
        pipe.execute()


def _step_of(raw: bytes | str) -> StepKey | None:
    """(instance id, node, seq, attempt) of a step message as stored by the broker; None for others."""
    match = _STEP_ARGS.search(raw.encode() if isinstance(raw, str) else raw)
    if match is None:
        return None
    iid, node, seq, attempt = match.groups()
    return iid.decode(), node.decode(), int(seq), int(attempt)


def _decoded(raw: bytes | str) -> tuple[str, Any] | None:
    """(task name, positional arguments) of a Celery message as the broker holds it; None for anything else."""
    try:
        message = json.loads(raw)
        return str(message.get("headers", {}).get("task", "")), json.loads(base64.b64decode(message["body"]))[0]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _taken(key: str, raw: bytes | str) -> TakenStep:
    """A popped message: its task and, for a step message, its (instance, node, seq, attempt)."""
    decoded = _decoded(raw)
    if decoded is None:
        return TakenStep(key, raw, "", None)
    task, args = decoded
    try:
        step: StepKey = (str(args[0]), str(args[1]), int(args[2]), int(args[3]))
    except (ValueError, KeyError, IndexError, TypeError):
        return TakenStep(key, raw, task, None)
    return TakenStep(key, raw, task, step if len(args) == 4 else None)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _instance_of(raw: bytes | str | None) -> str | None:
    """The instance id a queued step message is for (None when it is not one of ours)."""
    decoded = _decoded(raw) if raw else None
    try:
        return None if decoded is None else str(decoded[1][0])
    except (KeyError, IndexError, TypeError):
        return None
