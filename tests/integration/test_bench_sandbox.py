"""The benchmarks' sandbox (``bench.sandbox``): its engine starts instances as ``tradeflow pm run``
does on the default broker (the state's Redis), so that a benchmark's start is the user's."""

from __future__ import annotations

import json

from bench.sandbox import Sandbox
from engine.broker import RedisQueueEnqueuer
from engine.definitions.validation import load_definition
from engine.testing import enqueuer_of

ONE_STEP = {
    "name": "sandboxed",
    "start": "opened",
    "nodes": {
        "opened": {"type": "wait", "until": "timestamp('2025-01-01T00:00:00Z')", "next": "work"},
        "work": {"type": "service", "service": "svc", "action": "work", "input": {}, "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}


def test_the_sandbox_engine_pushes_each_first_step_with_its_instance(redis_url: str) -> None:
    with Sandbox(redis_url) as sandbox:
        enqueuer = enqueuer_of(sandbox.engine)
        assert isinstance(enqueuer, RedisQueueEnqueuer)  # the store's scripts push, not Celery's send_task
        assert enqueuer.key_prefix == sandbox.broker_prefix
        sandbox.engine.publish(load_definition(json.dumps(ONE_STEP)))
        ids = sandbox.engine.start_many("sandboxed", [{} for _ in range(3)])  # the wait's time has come
        assert enqueuer.waiting(["svc"]) == 3
        assert all(sandbox.engine.get(iid).node == "work" for iid in ids)
