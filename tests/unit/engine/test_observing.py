"""What the console and /metrics read from the engine: queues, timers, deadlines, the catalog."""

from __future__ import annotations

import json

import redis

from engine.api import Engine
from engine.broker import RedisQueueEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore

FLOW = {"name": "obs", "start": "work", "nodes": {
    "work": {"type": "service", "service": "obsq", "action": "do", "transitions": {"ok": "done"}},
    "done": {"type": "terminal", "status": "succeeded"}}}
PARKED = {"name": "parked", "start": "nap", "nodes": {
    "nap": {"type": "wait", "until": "now() + duration('1h')", "next": "done"},
    "done": {"type": "terminal", "status": "succeeded"}}}


def test_queue_depth_and_oldest_age_come_from_the_broker_lists(real_redis: redis.Redis, key_prefix: str) -> None:
    clock = ManualClock(1_000_000.0)
    engine = Engine(RedisStore(real_redis, Keys(key_prefix)), RedisQueueEnqueuer(real_redis, f"{key_prefix}:q:"),
                    clock)
    engine.publish(load_definition(json.dumps(FLOW)))
    engine.start_many("obs", [{"n": i} for i in range(3)], run="q")
    clock.advance(42.0)
    stats = engine.queue_stats(["obsq", "empty"])
    assert stats["obsq"][0] == 3 and stats["obsq"][1] == 42.0
    assert stats["empty"] == (0, None)


def test_timers_due_deadlines_and_catalog(real_redis: redis.Redis, key_prefix: str) -> None:
    clock = ManualClock(1_000_000.0)
    engine = Engine(RedisStore(real_redis, Keys(key_prefix)), RedisQueueEnqueuer(real_redis, f"{key_prefix}:q:"),
                    clock)
    engine.publish(load_definition(json.dumps(PARKED)), alias="production")
    engine.start("parked", {}, run="t")
    assert engine.timers_due() == 0
    clock.advance(3601.0)
    assert engine.timers_due() == 1
    assert engine.progress("t").deadline is None
    engine.set_run_deadline("t", 1_234_567.5)
    assert engine.progress("t").deadline == 1_234_567.5
    engine.set_run_deadline("t", None)
    assert engine.progress("t").deadline is None
    assert [(e.name, e.versions, e.aliases) for e in engine.catalog()] == [
        ("parked", [1], {"latest": 1, "production": 1})]
