"""Run workflows in-process, one message at a time, without Celery (for tests and notebooks).

    engine = Engine(store, MemoryEnqueuer(), clock)
    driver = Driver(engine)
    iid = engine.start("my-flow", {...})
    driver.run_until_idle()
"""

from __future__ import annotations

from typing import Any

import redis

from engine.api import Engine
from engine.broker import MemoryEnqueuer, StepMessage
from engine.definitions.model import GatherNode, HttpNode, Node, ServiceNode, StepNode
from engine.runtime.gather import BATCH_TASK_SUFFIX
from engine.runtime.http import call_http
from engine.runtime.outcomes import StepReport
from engine.service import ActionRegistry, Transition, registry


class Driver:
    """Delivers an engine's queued step messages to the registered actions, in-process."""

    def __init__(self, engine: Engine, actions: ActionRegistry | None = None, *, inline: bool = False) -> None:
        if not isinstance(engine.enqueuer, MemoryEnqueuer):
            raise TypeError("Driver needs an Engine built with a MemoryEnqueuer")
        self.engine = engine
        self.queue: MemoryEnqueuer = engine.enqueuer
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
            return StepReport(self.engine.runtime.gatherer.run_batch(message.instance_id, message.attempt,
                                                                     self.execute_batch))

        def same_service(node: Node) -> bool:  # what a worker of the message's queue would run inline
            return isinstance(node, ServiceNode) and node.service == message.queue

        return self.engine.runtime.run_step(message.instance_id, message.node, message.seq, message.attempt,
                                            self.execute, same_service if self.inline else None)

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
                self.engine.runtime.tick()
            if self.step() is None:
                if not (tick and self.engine.runtime.tick()):
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
