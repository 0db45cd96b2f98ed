"""Engine overhead: steps per second of a 5-step no-op workflow against bare Celery.

Same Redis, same queue (``bench``), same workers, in one run:
  1. N bare no-op tasks (each counts itself with one INCR);
  2. N/5 Celery chains of 5 such tasks;
  3. N/5 engine instances of a workflow of 5 no-op service steps (N steps), one broker message
     per step, each delivered by Celery (``TRADEFLOW_INLINE_STEPS=0``, ``TRADEFLOW_DRAIN_STEPS=0``):
     the dispatcher's own cost;
  4. the same, a message per step, with the workers draining the deep queue (up to 16 waiting
     steps taken per delivered message: ``TRADEFLOW_DRAIN_STEPS``, default 16);
  5. the engine's defaults: a worker also runs the same service's next step itself, without a
     broker hop.

Every message of 1. and 3./4. is on the queue within a fraction of a second (pipelined), so
each figure is what the workers can do, not how fast this process publishes; the chains go
out through ``apply_async`` (N/5 publishes).

The workers: by default the layout ``tradeflow workers`` starts (:func:`engine.ops.fleet.default_fleets`:
one ``solo`` process per core consuming every queue), each also consuming ``bench``; with a
``pool`` (``--pool prefork --concurrency 2``), one worker of that pool on ``bench`` and a
``threads`` worker for the engine's queue. The workers inherit this process's environment
(``TRADEFLOW_BROKER_RIDERS=0``: a delivered step's start and ack ride no round trip of kombu's).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import redis
from celery import chain, signature

from engine.api import Engine
from engine.app import sender_app
from engine.broker import RedisQueueEnqueuer, StepMessage
from engine.definitions.validation import load_definition
from engine.ops.fleet import Fleet, FleetSpec, default_fleets
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import delete_prefix

STEPS = 5


def _definition() -> str:
    nodes: dict[str, Any] = {}
    for i in range(STEPS):
        nodes[f"s{i}"] = {"type": "service", "service": "bench", "action": "noop", "input": {},
                          "transitions": {"ok": f"s{i + 1}" if i + 1 < STEPS else "done"}}
    nodes["done"] = {"type": "terminal", "status": "succeeded"}
    return json.dumps({"name": "bench-noop", "record": "metadata", "start": "s0", "nodes": nodes})


def _wait_counter(client: redis.Redis, key: str, target: int, timeout: float) -> float:
    start = time.monotonic()
    while int(client.get(key) or 0) < target:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{key}: {client.get(key)} of {target} after {timeout}s")
        time.sleep(0.01)
    return time.monotonic()


def _push_bare(client: redis.Redis, queue: RedisQueueEnqueuer, counter: str, n: int) -> None:
    """N bare tasks onto the bench queue, pipelined (Celery's own message, as send_task writes it)."""
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        envelope = queue.envelope(StepMessage("bench.bare", "bench", counter, "-", 0, 0))
        pipe.lpush(envelope.key, envelope.body)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def layout(pool: str | None, concurrency: int) -> list[FleetSpec]:
    """The bench's workers: the default layout (``pool`` None), each process also on ``bench``; or one
    worker of ``pool`` x ``concurrency`` on ``bench`` and a ``threads`` one on the engine's queue."""
    if pool is None:
        return [replace(spec, queue=f"bench,{spec.queue}") for spec in default_fleets()]
    return [FleetSpec("bench", pool, concurrency), FleetSpec("engine", "threads", 2)]


@contextmanager
def _fleet(pool: str | None, concurrency: int, env: dict[str, str], inline_steps: int,
           drain_steps: int = 16) -> Iterator[None]:
    specs = layout(pool, concurrency)
    with Fleet(specs, beat=False, env={**env, "TRADEFLOW_INLINE_STEPS": str(inline_steps),
                                       "TRADEFLOW_DRAIN_STEPS": str(drain_steps)}):
        yield


def _engine_run(engine: Engine, run: str, n_steps: int) -> tuple[float, int]:
    """Steps per second of N/5 instances (after one warm-up instance), and how many failed."""
    engine.start_many("bench-noop", [{}], run=f"{run}-warm")
    engine.wait_for_run(f"{run}-warm", timeout=60, poll=0.05)
    t0 = time.monotonic()
    engine.start_many("bench-noop", [{} for _ in range(n_steps // STEPS)], run=run)
    progress = engine.wait_for_run(run, timeout=600, poll=0.02)
    elapsed = time.monotonic() - t0
    return progress.counts["succeeded"] * STEPS / elapsed, progress.counts["failed"]


def run(redis_url: str, n_steps: int = 5000, pool: str | None = None, concurrency: int = 2,
        delivered_only: bool = False) -> dict[str, Any]:
    """Run the five measurements and return their figures (``delivered_only``: bare tasks and a
    message per step only; ``pool`` None: the default layout)."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    env = {"TRADEFLOW_REDIS_URL": redis_url, "TRADEFLOW_KEY_PREFIX": prefix,
           "TRADEFLOW_BROKER_PREFIX": f"{prefix}:q:", "TRADEFLOW_EVENTS": "0",
           "TRADEFLOW_SERVICE_MODULES": "engine.samples.actions,bench.tasks"}
    os.environ.update(env)
    client = redis.Redis.from_url(redis_url)
    app = sender_app(redis_url, f"{prefix}:q:", "bench")
    queue = RedisQueueEnqueuer.for_app(app, client)
    engine = Engine(RedisStore(client, Keys(prefix)), queue)
    engine.publish(load_definition(_definition()))
    results: dict[str, Any] = {"n_steps": n_steps, "pool": pool, "concurrency": concurrency,
                               "layout": ", ".join(map(str, layout(pool, concurrency))),
                               "broker_riders": os.environ.get("TRADEFLOW_BROKER_RIDERS", "1") != "0"}
    try:
        with _fleet(pool, concurrency, env, inline_steps=0, drain_steps=0):
            warm = f"{prefix}:warm"
            _push_bare(client, queue, warm, 50)
            _wait_counter(client, warm, 50, 60)

            counter = f"{prefix}:bare"
            t0 = time.monotonic()
            _push_bare(client, queue, counter, n_steps)
            results["bare_tasks_per_s"] = n_steps / (_wait_counter(client, counter, n_steps, 600) - t0)

            if delivered_only:
                results["engine_message_steps_per_s"], failed = _engine_run(engine, "per-message", n_steps)
                results["engine_failed"] = failed
                results["ratio_engine_message_vs_bare"] = results["engine_message_steps_per_s"] / \
                    results["bare_tasks_per_s"]
                return results
            counter = f"{prefix}:chain"
            link = signature("bench.bare", args=[counter], queue="bench", app=app)
            t0 = time.monotonic()
            for _ in range(n_steps // STEPS):
                chain(*[link.clone() for _ in range(STEPS)]).apply_async()
            results["chain_steps_per_s"] = n_steps / (_wait_counter(client, counter, n_steps, 600) - t0)

            results["engine_message_steps_per_s"], failed = _engine_run(engine, "per-message", n_steps)
        with _fleet(pool, concurrency, env, inline_steps=0, drain_steps=16):
            results["engine_drained_steps_per_s"], failed_drained = _engine_run(engine, "drained", n_steps)
        with _fleet(pool, concurrency, env, inline_steps=16, drain_steps=16):
            results["engine_steps_per_s"], failed_inline = _engine_run(engine, "inline", n_steps)
        results["engine_failed"] = failed + failed_drained + failed_inline
    finally:
        delete_prefix(client, prefix)
    bare, chained = results["bare_tasks_per_s"], results["chain_steps_per_s"]
    results["ratio_engine_vs_bare"] = results["engine_steps_per_s"] / bare
    results["ratio_engine_vs_chain"] = results["engine_steps_per_s"] / chained
    results["ratio_engine_message_vs_bare"] = results["engine_message_steps_per_s"] / bare
    results["ratio_engine_message_vs_chain"] = results["engine_message_steps_per_s"] / chained
    results["ratio_engine_drained_vs_bare"] = results["engine_drained_steps_per_s"] / bare
    results["ratio_engine_drained_vs_chain"] = results["engine_drained_steps_per_s"] / chained
    return results
