"""Step messages written straight onto Celery's Redis queue lists, and read back from them.

When the broker is the Redis that holds the engine's state, a step message need not go
through ``app.send_task`` (a producer, a routing-table read and a connection per publish):
the engine writes the same message Celery would, onto the same list, **inside the Lua script
that applies the transition**. Moving an instance on and enqueueing its next step then cost
one Redis round trip, and they happen together or not at all: no window where a transition
is applied but its next step was never sent.

The message format is here too: Celery's task protocol 2 in kombu's Redis envelope, and kombu's
Redis key layout, written and read in this module only. A step message goes on a list exactly
as ``send_task`` would write it (json, base64 body), so a Celery worker runs it;
``tests/contract/test_broker_contract.py`` compares the two field by field on the lowest and
the newest celery/kombu the project supports (``make test-compat``). Any other broker
(RabbitMQ, another Redis) uses :class:`engine.broker.celery_sender.CeleryEnqueuer`.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import uuid
from bisect import bisect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis

from engine.broker.consumers import MARK_PREFIX, OWNERS
from engine.broker.interface import PRIORITY_CONTINUE, Delivery, StepKey, StepMessage, TakenStep
from engine.jsoncodec import dumps, encode_known, loads
from engine.keyspace import read_lua, text
from engine.store.codec import Envelope
from engine.store.riders import Rider, evalsha

#: Messages read per LRANGE / HSCAN when looking into the queues.
SCAN_CHUNK = 2000
#: kombu's separator between a queue name and its priority suffix.
PRIORITY_SEPARATOR = "\x06\x16"
DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
#: kombu's hash of delivered, unacknowledged messages (delivery tag -> [message, exchange, routing
#: key]) and its index by delivery time (delivery tag -> time), under the broker's key prefix.
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
#: A step message's arguments as Celery writes them in its headers (``argsrepr``), in a queue list or
#: in kombu's unacked hash: ['<instance id>', '<node>', seq, attempt].
_STEP_ARGS = re.compile(rb"\"argsrepr\":\s*\"\['([^']+)', '([^']+)', (\d+), (\d+)\]\"")


def queue_name(queue: str, priority: int, priority_steps: Sequence[int]) -> str:
    """The list (without the key prefix) kombu's Redis transport reads ``queue`` at ``priority`` from;
    ``priority_steps`` sorted."""
    step = priority_steps[max(bisect(priority_steps, priority) - 1, 0)]
    return f"{queue}{PRIORITY_SEPARATOR}{step}" if step else queue


def task_message(message: StepMessage, priority: int, origin: str, reply_to: str) -> str:
    """``message`` as ``send_task`` writes it on a Redis list (one JSON document)."""
    task_id = str(uuid.uuid4())
    args = message.args
    body = encode_known([args, {}, _EMBED])  # strings and integers: no float to look for
    payload = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": message.task, "id": task_id, "shadow": None, "eta": None,
            "expires": None, "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
            "root_id": task_id, "parent_id": None, "argsrepr": repr(args), "kwargsrepr": "{}",
            "origin": origin, "ignore_result": True, "replaced_task_nesting": 0,
            "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": task_id, "reply_to": reply_to, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": message.queue}, "priority": priority,
            "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        },
    }
    return encode_known(payload).decode()


def step_of(raw: bytes | str) -> StepKey | None:
    """(instance id, node, seq, attempt) of a step message as stored by the broker (a queue list's
    entry or an unacked one), without decoding the body; None for other messages."""
    match = _STEP_ARGS.search(raw.encode() if isinstance(raw, str) else raw)
    if match is None:
        return None
    iid, node, seq, attempt = match.groups()
    return iid.decode(), node.decode(), int(seq), int(attempt)


def decoded(raw: bytes | str) -> tuple[str, Any] | None:
    """(task name, positional arguments) of a Celery message as the broker holds it; None for anything else."""
    try:
        message = loads(raw)
        return str(message.get("headers", {}).get("task", "")), loads(base64.b64decode(message["body"]))[0]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def step_args(args: Any) -> StepKey | None:
    """A step message's (instance id, node, seq, attempt) from its positional arguments; None for others."""
    try:
        if len(args) != 4:
            return None
        return str(args[0]), str(args[1]), int(args[2]), int(args[3])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def instance_of(raw: bytes | str | None) -> str | None:
    """The instance id a queued step message is for (None when it is not one of ours)."""
    found = decoded(raw) if raw else None
    try:
        return None if found is None else str(found[1][0])
    except (KeyError, IndexError, TypeError):
        return None


def unacked_entry(raw: bytes | str) -> tuple[str, str, Any] | None:
    """(task name, routing key, the message document) of an entry of kombu's unacked hash; None when unreadable."""
    try:
        message, _exchange, routing_key = loads(raw)
        return str(message.get("headers", {}).get("task", "")), str(routing_key), message
    except (ValueError, TypeError, AttributeError):
        return None


def redelivered(message: dict[str, Any]) -> str:
    """A message taken back from the unacked hash, marked redelivered as kombu's restore marks it."""
    message.setdefault("headers", {})["redelivered"] = True
    message.setdefault("properties", {}).setdefault("delivery_info", {})["redelivered"] = True
    return dumps(message)


class RedisQueueEnqueuer:
    """Builds Celery messages for the Redis broker's queue lists, pushes and takes them, and reads
    kombu's unacknowledged deliveries."""

    def __init__(self, client: redis.Redis, key_prefix: str = "",
                 priority_steps: Sequence[int] = DEFAULT_PRIORITY_STEPS) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.priority_steps = sorted(priority_steps)
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self.reply_to = str(uuid.uuid4())
        self._take = client.register_script(read_lua(__file__, "take.lua"))

    @classmethod
    def for_app(cls, app: Any, client: redis.Redis) -> RedisQueueEnqueuer:
        """One that writes where ``app``'s workers read (its broker key prefix and priority steps)."""
        options = app.conf.broker_transport_options or {}
        return cls(client, options.get("global_keyprefix", ""),
                   options.get("priority_steps", DEFAULT_PRIORITY_STEPS))

    def queue_key(self, queue: str, priority: int) -> str:
        """The list kombu's Redis transport reads ``queue`` at ``priority`` from."""
        return self.key_prefix + queue_name(queue, priority, self.priority_steps)

    def queue_keys(self, queue: str) -> list[str]:
        """Every list ``queue``'s messages wait in (one per priority step)."""
        return list(dict.fromkeys(self.queue_key(queue, step) for step in self.priority_steps))

    # -- push and take: one round trip each ------------------------------------------------------

    def envelope(self, message: StepMessage, priority: int = PRIORITY_CONTINUE) -> Envelope:
        """The message as it goes on the list: the key and the JSON to LPUSH there."""
        return Envelope(self.queue_key(message.queue, priority),
                        task_message(message, priority, self.origin, self.reply_to))

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
        return [_taken(text(key), raw) for key, raw in zip(flat[0::2], flat[1::2], strict=True)]

    def take_rider(self, queue: str, count: int, landed: Callable[[list[TakenStep]], None]) -> Rider:
        """:meth:`take` as a rider of a store change (:mod:`engine.store.riders`): the taken messages
        are handed to ``landed`` (none when the take failed)."""
        def told(reply: Any) -> None:
            flat = [] if isinstance(reply, Exception) else reply
            landed([_taken(text(key), raw) for key, raw in zip(flat[0::2], flat[1::2], strict=True)])

        return Rider(lambda: evalsha(self._take, self.queue_keys(queue), [count]), told, self._take)

    def give_back(self, taken: Sequence[TakenStep]) -> None:
        """Put ``taken`` messages back where they were, at the head of their lists (next to be delivered)."""
        if not taken:
            return
        pipe = self.client.pipeline(transaction=False)
        for item in reversed(taken):
            pipe.rpush(item.key, item.raw)
        pipe.execute()

    # -- look into the queues and kombu's unacked hash (the reconciliation, the console) ----------

    def waiting(self, queues: Iterable[str]) -> int:
        """Messages waiting in ``queues`` (every priority), any task (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            for key in self.queue_keys(queue):
                pipe.llen(key)
        return sum(int(n) for n in pipe.execute())

    def count(self, queues: Iterable[str]) -> int:
        """Messages waiting in ``queues`` plus the step messages of ``queues`` delivered to consumers
        not known to be gone. Housekeeping tasks (sweep, tick) and dead consumers' deliveries do not count."""
        wanted = set(queues)
        held = sum(1 for d in self.deliveries() if d.step is not None and d.held is not False and d.queue in wanted)
        return self.waiting(wanted) + held

    def pending(self, queues: Iterable[str]) -> dict[StepKey, float]:
        """The step messages waiting in ``queues`` (0.0) or delivered to a consumer not known to be
        gone and unacknowledged (delivery time).

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
                        step = step_of(raw)
                        if step is not None:
                            found.setdefault(step, 0.0)
                    if len(chunk) < SCAN_CHUNK:
                        break
                    start += SCAN_CHUNK
        for delivery in self.deliveries():
            if delivery.step is not None and delivery.held is not False:
                found[delivery.step] = delivery.at or found.get(delivery.step, 0.0)
        return found

    def deliveries(self) -> list[Delivery]:
        """Every delivered, unacknowledged message in kombu's unacked hash, with its delivery time and
        whether the consumer that took it is alive (three round trips, whatever their number)."""
        unacked = self.key_prefix + UNACKED
        pipe = self.client.pipeline(transaction=False)
        pipe.zrange(self.key_prefix + UNACKED_INDEX, 0, -1, withscores=True)
        pipe.hgetall(self.key_prefix + OWNERS)
        index, owners = pipe.execute()
        at = {text(tag): float(score) for tag, score in index}
        owner = {text(tag): text(who) for tag, who in owners.items()}
        consumers = sorted(set(owner.values()))
        alive = dict(zip(consumers, (bool(n) for n in self._marks(consumers)), strict=True))
        out = []
        for tag, raw in self.client.hscan_iter(unacked, count=SCAN_CHUNK):
            tag = text(tag)
            entry = unacked_entry(raw)
            task, queue = (entry[0], entry[1]) if entry else ("", "")
            who = owner.get(tag)
            out.append(Delivery(tag, task, queue, step_of(raw), at.get(tag, 0.0),
                                None if who is None else alive[who]))
        return out

    def _marks(self, consumers: Sequence[str]) -> list[Any]:
        if not consumers:
            return []
        pipe = self.client.pipeline(transaction=False)
        for who in consumers:
            pipe.exists(self.key_prefix + MARK_PREFIX + who)
        return pipe.execute()

    def restore(self, deliveries: Sequence[Delivery]) -> int:
        """Put ``deliveries`` back at the front of their queues, marked redelivered, and out of kombu's
        unacked hash (what kombu's ``restore_by_tag`` does). One transaction each, which leaves alone a
        message acked or restored meanwhile, and one a live consumer holds again (kombu keeps the
        delivery tag of a restored message)."""
        restored = 0
        unacked, owners = self.key_prefix + UNACKED, self.key_prefix + OWNERS
        for delivery in deliveries:

            def move(pipe: Any, tag: str = delivery.tag) -> bool:
                raw = pipe.hget(unacked, tag)
                who = pipe.hget(owners, tag)
                alive = who is not None and pipe.exists(self.key_prefix + MARK_PREFIX + text(who))
                entry = unacked_entry(raw) if raw and not alive else None
                pipe.multi()
                if entry is None:
                    return False
                self._forget(pipe, tag)
                _task, queue, message = entry
                priority = int((message.get("properties") or {}).get("priority") or 0)
                pipe.rpush(self.queue_key(queue, priority), redelivered(message))
                return True

            restored += bool(self.client.transaction(move, unacked, owners, value_from_callable=True))
        return restored

    def drop(self, deliveries: Sequence[Delivery]) -> int:
        """Remove ``deliveries`` from kombu's unacked hash and index (their steps moved on); how many were there."""
        if not deliveries:
            return 0
        pipe = self.client.pipeline(transaction=True)
        for delivery in deliveries:
            self._forget(pipe, delivery.tag)
        return sum(int(n) for n in pipe.execute()[1::3])

    def _forget(self, pipe: Any, tag: str) -> None:
        pipe.zrem(self.key_prefix + UNACKED_INDEX, tag)
        pipe.hdel(self.key_prefix + UNACKED, tag)
        pipe.hdel(self.key_prefix + OWNERS, tag)

    def queue_heads(self, queue: str) -> tuple[int, list[str]]:
        """Messages waiting in ``queue`` (every priority), and the instance ids of the oldest one of
        each priority's list (one pipelined round trip; what the console's queue metrics read)."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.queue_keys(queue):
            pipe.llen(key)
            pipe.lindex(key, -1)
        answers = pipe.execute()
        oldest = [iid for raw in answers[1::2] if (iid := instance_of(raw)) is not None]
        return sum(int(n) for n in answers[0::2]), oldest


def _taken(key: str, raw: bytes | str) -> TakenStep:
    """A popped message: its task and, for a step message, its (instance, node, seq, attempt)."""
    found = decoded(raw)
    if found is None:
        return TakenStep(key, raw, "", None)
    task, args = found
    return TakenStep(key, raw, task, step_args(args))
