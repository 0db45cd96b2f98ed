"""Celery's task protocol 2 in kombu's Redis envelope, and kombu's Redis key layout: written and read here only.

A step message goes on a list exactly as ``send_task`` would write it (json, base64 body), so
a Celery worker runs it; ``tests/contract/test_broker_contract.py`` compares the two field by
field on the lowest and the newest celery/kombu the project supports (``make test-compat``).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from bisect import bisect
from collections.abc import Sequence
from typing import Any

from engine.broker.interface import StepKey, StepMessage

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


def queue_of(list_name: str) -> str:
    """The queue a list (without the key prefix) belongs to."""
    return list_name.split(PRIORITY_SEPARATOR, 1)[0]


def task_message(message: StepMessage, priority: int, origin: str, reply_to: str) -> str:
    """``message`` as ``send_task`` writes it on a Redis list (one JSON document)."""
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
            "origin": origin, "ignore_result": True, "replaced_task_nesting": 0,
            "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": task_id, "reply_to": reply_to, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": message.queue}, "priority": priority,
            "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(payload)


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
        message = json.loads(raw)
        return str(message.get("headers", {}).get("task", "")), json.loads(base64.b64decode(message["body"]))[0]
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
        message, _exchange, routing_key = json.loads(raw)
        return str(message.get("headers", {}).get("task", "")), str(routing_key), message
    except (ValueError, TypeError, AttributeError):
        return None


def redelivered(message: dict[str, Any]) -> str:
    """A message taken back from the unacked hash, marked redelivered as kombu's restore marks it."""
    message.setdefault("headers", {})["redelivered"] = True
    message.setdefault("properties", {}).setdefault("delivery_info", {})["redelivered"] = True
    return json.dumps(message)
