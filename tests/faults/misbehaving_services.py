"""A test service that misbehaves on request (loaded by the workers of test_service_faults).

``faulty.work`` counts its calls per (key, node) in Redis, then, at node ``b`` only, does
what the instance's ``mode`` asks: ``raise`` (an exception, retried by the node's policy),
``hang`` (blocks until the test sets the release key, or 120 s), ``unknown`` (a transition the
node does not have), ``not_transition`` (returns an int), ``not_json`` (data with a set in it).
Any other mode answers ``ok`` at once.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from engine.service import Transition, action

_clients: dict[int, redis.Redis] = {}


def _client() -> redis.Redis:
    pid = os.getpid()
    if pid not in _clients:
        _clients[pid] = redis.Redis.from_url(os.environ["TRADEFLOW_REDIS_URL"])
    return _clients[pid]


def calls_key(prefix: str) -> str:
    """Hash of ``<key>:<node>`` -> calls."""
    return f"{prefix}:calls"


def release_key(prefix: str) -> str:
    """Set by the test to let hung calls return."""
    return f"{prefix}:release"


@action("faulty", "work")
def work(payload: dict[str, Any]) -> Any:
    """Answer ``ok``, or misbehave at node ``b`` as ``payload['mode']`` asks."""
    prefix = os.environ["TRADEFLOW_KEY_PREFIX"]
    client = _client()
    client.hincrby(calls_key(prefix), f"{payload['key']}:{payload['node']}", 1)
    mode = payload.get("mode") if payload["node"] == "b" else "ok"
    if mode == "raise":
        raise RuntimeError(f"{payload['key']}: the service is down")
    if mode == "hang":
        end = time.monotonic() + 120
        while not client.exists(release_key(prefix)) and time.monotonic() < end:
            time.sleep(0.1)
    if mode == "unknown":
        return Transition("sideways", {})
    if mode == "not_transition":
        return 42
    if mode == "not_json":
        return Transition("ok", {"symbols": {"XIU", "VTI"}})
    return Transition("ok", {"node": payload["node"]})
