"""Service actions used by the integration tests (loaded by real workers)."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from engine.errors import ActionFailed
from engine.service import Transition, action


def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["TRADEFLOW_REDIS_URL"])


@action("itest", "step")
def step(payload: dict[str, Any]) -> Transition:
    """Counts its calls per (instance key, node) in Redis; fails or misbehaves on request.

    ``mode``: ``raise`` or ``unknown`` fail step ``b``; ``slow-once`` sleeps on the first call
    only (a step killed mid-way is run again at once)."""
    key = payload["key"]
    calls = _client().hincrby(f"{os.environ['TRADEFLOW_KEY_PREFIX']}:calls", f"{key}:{payload['node']}", 1)
    if payload.get("mode") == "raise" and payload["node"] == "b":
        raise ActionFailed(f"{key} is broken")
    if payload.get("mode") == "unknown" and payload["node"] == "b":
        return Transition("sideways")
    if payload.get("sleep") and not (payload.get("mode") == "slow-once" and calls > 1):
        time.sleep(float(payload["sleep"]))
    return Transition("ok", {"node": payload["node"], "pid": os.getpid()})


@action("itest", "slow")
def slow(payload: dict[str, Any]) -> Transition:
    """Announces its pid, then sleeps: the test kills the process mid-step."""
    client = _client()
    client.hincrby(f"{os.environ['TRADEFLOW_KEY_PREFIX']}:calls", f"{payload['key']}:slow", 1)
    client.rpush(f"{os.environ['TRADEFLOW_KEY_PREFIX']}:slow-pids", os.getpid())
    time.sleep(float(payload.get("sleep", 2.0)))
    return Transition("ok", {"pid": os.getpid()})


@action("itest", "limited")
def limited(payload: dict[str, Any]) -> Transition:
    """Counts its calls per second of Redis's clock; records overlaps of one key's members."""
    client = _client()
    prefix = os.environ["TRADEFLOW_KEY_PREFIX"]
    second = int(client.time()[0])
    client.hincrby(f"{prefix}:per-second:{payload['key']}", str(second), 1)
    if payload.get("exclusive"):
        inside = client.incr(f"{prefix}:inside:{payload['key']}")
        client.hset(f"{prefix}:most-inside", payload["key"], max(inside, int(
            client.hget(f"{prefix}:most-inside", payload["key"]) or 0)))
        time.sleep(float(payload.get("sleep", 0.05)))
        client.decr(f"{prefix}:inside:{payload['key']}")
    client.rpush(f"{prefix}:finished:{payload['key']}", time.time())
    return Transition("ok")


@action("itest", "batch")
def batch(payload: dict[str, Any]) -> dict[str, Any]:
    """A gather node's batch step: counts its calls per batch; every member goes on with ``ok``."""
    _client().hincrby(f"{os.environ['TRADEFLOW_KEY_PREFIX']}:batch-calls", payload["batch"]["id"], 1)
    return {m["instance"]: Transition("ok") for m in payload["members"]}
