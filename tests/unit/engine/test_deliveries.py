"""The reconciliation's sorting of delivered messages (``engine.runtime.deliveries``): what counts as a
queued step's message, what goes back to its queue, what is dropped."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from engine.api import Engine
from engine.broker import Delivery, MemoryEnqueuer, StepKey
from engine.definitions.validation import load_definition
from engine.runtime.deliveries import count_messages, settle
from engine.service import Transition
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import runtime_of

FLOW = {
    "name": "two", "start": "a",
    "nodes": {
        "a": {"type": "service", "service": "svc", "action": "a", "input": {}, "transitions": {"ok": "b"}},
        "b": {"type": "service", "service": "svc", "action": "b", "input": {}, "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}


class Broker(MemoryEnqueuer):
    """A broker whose deliveries are given by the test; records what it was asked to restore and drop."""

    def __init__(self, deliveries: list[Delivery]) -> None:
        super().__init__()
        self.held, self.restored, self.dropped = deliveries, [], []

    def waiting(self, queues: Iterable[str]) -> int:
        return 5

    def deliveries(self) -> list[Delivery]:
        return list(self.held)

    def restore(self, deliveries: Sequence[Delivery]) -> int:
        self.restored += deliveries
        return len(deliveries)

    def drop(self, deliveries: Sequence[Delivery]) -> int:
        self.dropped += deliveries
        return len(deliveries)


def _delivery(tag: str, step: StepKey | None, held: bool | None) -> Delivery:
    return Delivery(tag, "svc.a" if step else "engine.sweep", "svc" if step else "engine", step, 1.0, held)


def test_only_live_deliveries_of_steps_queued_at_that_key_count_and_gone_ones_are_sorted(
        any_redis: redis.Redis, key_prefix: str) -> None:
    store = RedisStore(any_redis, Keys(key_prefix))
    engine = Engine(store, MemoryEnqueuer())
    engine.publish(load_definition(json.dumps(FLOW)))
    queued, moved, started = (engine.start("two", {}) for _ in range(3))

    def ok(node: Any, payload: Any) -> Transition:
        return Transition("ok")

    runtime_of(engine).run_step(moved, "a", 1, 1, ok)  # now at b, seq 2: a message for a/1 can only be a no-op
    store.start(started, "a", 1, 1, 1.0)  # a worker runs it: its message is no queued step's any more
    deliveries = [
        _delivery("live-queued", (queued, "a", 1, 1), True),  # counts
        _delivery("unknown-queued", (queued, "a", 1, 1), None),  # counts: no consumer recorded
        _delivery("live-moved", (moved, "a", 1, 1), True),  # no count, left alone (its consumer acks it)
        _delivery("live-old-attempt", (queued, "a", 1, 0), True),  # another attempt: no count
        _delivery("live-started", (started, "a", 1, 1), True),  # running (acks late): no count
        _delivery("sweep", None, True),  # housekeeping: no count
        _delivery("gone-moved", (moved, "a", 1, 1), False),  # dropped
        _delivery("gone-current", (moved, "b", 2, 1), False),  # back to its queue
        _delivery("gone-missing", ("no-such-instance", "a", 1, 1), False),  # dropped
        _delivery("gone-sweep", None, False),  # back to its queue
    ]
    broker = Broker(deliveries)
    current = settle(broker, store)
    assert current is not None
    assert [d.tag for d in current] == ["live-queued", "unknown-queued"]
    assert [d.tag for d in broker.dropped] == ["gone-moved", "gone-missing"]
    assert [d.tag for d in broker.restored] == ["gone-current", "gone-sweep"]
    assert count_messages(broker, current, ["svc"]) == 5 + 2
    assert count_messages(broker, current, ["other"]) == 5


def test_a_broker_that_cannot_be_looked_into_is_counted_as_before(any_redis: redis.Redis, key_prefix: str) -> None:
    store = RedisStore(any_redis, Keys(key_prefix))
    memory = MemoryEnqueuer()
    assert settle(memory, store) is None
    assert count_messages(memory, None, ["svc"]) == 0
