"""Run workflows in-process, one message at a time, without Celery (for tests and notebooks),
and the one door tests use to the inside of an :class:`~engine.api.Engine`.

    engine = Engine(make_store(client, "test"), MemoryEnqueuer(), clock)
    driver = Driver(engine)
    iid = engine.start("my-flow", {...})
    driver.run_until_idle()
    assert store_of(engine).ttl(iid) == -1

``Engine`` is a closed facade (its store, runtime and enqueuer are private). A test that must
look or reach inside (a TTL, a sweep now, a message redelivered by hand) asks this module:
:func:`store_of`, :func:`runtime_of`, :func:`enqueuer_of`; it builds stores with
:func:`make_store`, step messages with :func:`step_message` and a worker's step counter with
:class:`StepMetrics`. This module is the only one
outside ``engine/api.py`` that touches ``Engine``'s private members
(``tests/unit/test_facade.py`` checks it).
"""

from __future__ import annotations

from typing import Any

import redis

from engine.api import Engine
from engine.broker import Enqueuer, MemoryEnqueuer, StepMessage
from engine.definitions.nodes import GatherNode, HttpNode, StepNode
from engine.runtime.concerns.draining import IDLE_PAUSE_SECONDS, Drain
from engine.runtime.concerns.inline import inline_rule
from engine.runtime.concerns.metrics import StepMetrics
from engine.runtime.concerns.timeouts import FULL_CHECK_PERIODS
from engine.runtime.gather import BATCH_TASK_SUFFIX
from engine.runtime.http import call_http
from engine.runtime.outcomes import StepReport, step_message
from engine.runtime.runner import Runtime
from engine.service import ActionRegistry, Transition, registry
from engine.store.keys import Keys
from engine.store.redis_store import DEFAULT_RETENTION_SECONDS, RedisStore
from engine.store.riders import send_all_with_riders


def store_of(engine: Engine) -> RedisStore:
    """The engine's store (tests only: TTLs, raw reads, a step started by hand)."""
    return engine._store


def runtime_of(engine: Engine) -> Runtime:
    """The engine's runtime (tests only: a tick, a sweep, a step run by hand)."""
    return engine._runtime


def enqueuer_of(engine: Engine) -> Enqueuer:
    """The engine's enqueuer (tests only: a message sent again by hand, the messages a MemoryEnqueuer holds)."""
    return engine._enqueuer


def drain_queues(engine: Engine, limit: int, batched: bool = True) -> None:
    """Make the engine's runtime drain up to ``limit`` waiting steps after each delivery, as a worker
    with ``TRADEFLOW_DRAIN_STEPS`` does (its enqueuer must write to Redis; tests and benchmarks);
    ``batched``: in batches, as a worker does by default (``TRADEFLOW_DRAIN_BATCH``), else one by one."""
    engine._runtime.drain = Drain(engine._enqueuer, limit)
    engine._runtime.drain_batch = batched


def start_each(store: RedisStore, steps: list[tuple[str, str, int, int, str]], clock: Any) -> None:
    """Start each of ``steps`` (instance id, node, seq, attempt, carrier) with a script call of its own, all
    pipelined in one round trip, replies kept as :meth:`RedisStore.prefetch_starts` keeps them: how a
    drained batch was started before that one call (a benchmark's comparison)."""
    send_all_with_riders(store.client, [], [store.start_rider(*step[:4], clock, step[4]) for step in steps])


def make_store(client: redis.Redis, prefix: str = "wf", retention_seconds: int = DEFAULT_RETENTION_SECONDS,
               replicate: Any = None) -> RedisStore:
    """A store on ``client`` with its keys under ``prefix`` (what a test hands to ``Engine``)."""
    return RedisStore(client, Keys(prefix), retention_seconds, replicate)


class Driver:
    """Delivers an engine's queued step messages to the registered actions, in-process."""

    def __init__(self, engine: Engine, actions: ActionRegistry | None = None, *, inline: bool = False) -> None:
        enqueuer = enqueuer_of(engine)
        if not isinstance(enqueuer, MemoryEnqueuer):
            raise TypeError("Driver needs an Engine built with a MemoryEnqueuer")
        self.engine = engine
        self.runtime = runtime_of(engine)
        self.queue: MemoryEnqueuer = enqueuer
        self.actions = actions or registry
        self.inline = inline
        self.delivered: list[StepMessage] = []

    def execute(self, node: StepNode, payload: Any) -> Transition:
        """Call the node's action (or endpoint) on ``payload``."""
        if isinstance(node, HttpNode):
            return call_http(node, payload)
        return self.actions.get(node.service, node.action).call(payload)

    def execute_batch(self, node: GatherNode, payload: dict[str, Any]) -> Any:
        """Call a gather node's action on a batch's payload."""
        return self.actions.get(node.service, node.action).invoke(payload)

    def deliver(self, message: StepMessage) -> StepReport:
        """Run one message (it need not come from the queue: tests redeliver on purpose)."""
        self.delivered.append(message)
        if message.task.endswith(BATCH_TASK_SUFFIX):
            return StepReport(self.runtime.gatherer.run_batch(message.instance_id, message.attempt,
                                                                     self.execute_batch))

        # what a worker of the message's queue would run inline (and which of those actions only read)
        same_service = inline_rule(message.queue, self.actions, frozenset) if self.inline else None
        return self.runtime.run_step(message.instance_id, message.node, message.seq, message.attempt,
                                     self.execute, same_service)

    def step(self) -> StepReport | None:
        """Run the next queued message; None when the queue is empty."""
        if not self.queue.messages:
            return None
        return self.deliver(self.queue.pop())

    def run_until_idle(self, max_steps: int = 100_000, tick: bool = True) -> int:
        """Run messages (and due timers, when ``tick``) until nothing is left to do now."""
        steps = 0
        while steps < max_steps:
            if tick:
                self.runtime.tick()
            if self.step() is None:
                if not (tick and self.runtime.tick()):
                    return steps
                continue
            steps += 1
        raise RuntimeError(f"still busy after {max_steps} steps: a loop?")


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key under ``prefix`` (and only those): how tests and benchmarks clean up."""
    batch = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)


__all__ = ["FULL_CHECK_PERIODS", "IDLE_PAUSE_SECONDS", "Driver", "Keys", "RedisStore", "StepMetrics", "delete_prefix",
           "enqueuer_of", "inline_rule", "make_store", "runtime_of", "start_each", "step_message", "store_of"]
