"""Engine overhead: steps per second of a 5-step no-op workflow against bare Celery.

Same Redis, same queue (``bench``), same pool and concurrency, in one run:
  1. N bare no-op tasks (each counts itself with one INCR);
  2. N/5 Celery chains of 5 such tasks;
  3. N/5 engine instances of a workflow of 5 no-op service steps (N steps).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import redis
from celery import Celery, chain, signature

from engine.api import Engine
from engine.fleet import Fleet, FleetSpec
from engine.keys import Keys
from engine.messages import CeleryEnqueuer
from engine.store import RedisStore
from engine.testing import delete_prefix
from engine.validation import load_definition

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


def run(redis_url: str, n_steps: int = 5000, pool: str = "prefork", concurrency: int = 2) -> dict[str, Any]:
    """Run the three measurements and return their figures."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    env = {"TRADEFLOW_REDIS_URL": redis_url, "TRADEFLOW_KEY_PREFIX": prefix,
           "TRADEFLOW_BROKER_PREFIX": f"{prefix}:q:", "TRADEFLOW_EVENTS": "0",
           "TRADEFLOW_SERVICE_MODULES": "engine.samples.actions,bench.tasks"}
    os.environ.update(env)
    client = redis.Redis.from_url(redis_url)
    app = Celery("bench", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(broker_url=redis_url, task_send_sent_event=False,
                    broker_transport_options={**app.conf.broker_transport_options, "global_keyprefix": f"{prefix}:q:"})
    engine = Engine(RedisStore(client, Keys(prefix)), CeleryEnqueuer(app))
    engine.publish(load_definition(_definition()))
    results: dict[str, Any] = {"n_steps": n_steps, "pool": pool, "concurrency": concurrency}
    fleet = Fleet([FleetSpec("bench", pool, concurrency), FleetSpec("engine", "threads", 2)], beat=False, env=env)
    try:
        with fleet:
            warm = f"{prefix}:warm"
            for _ in range(50):
                app.send_task("bench.bare", args=[warm], queue="bench")
            _wait_counter(client, warm, 50, 60)

            counter = f"{prefix}:bare"
            t0 = time.monotonic()
            for _ in range(n_steps):
                app.send_task("bench.bare", args=[counter], queue="bench")
            results["bare_tasks_per_s"] = n_steps / (_wait_counter(client, counter, n_steps, 600) - t0)

            counter = f"{prefix}:chain"
            link = signature("bench.bare", args=[counter], queue="bench", app=app)
            t0 = time.monotonic()
            for _ in range(n_steps // STEPS):
                chain(*[link.clone() for _ in range(STEPS)]).apply_async()
            results["chain_steps_per_s"] = n_steps / (_wait_counter(client, counter, n_steps, 600) - t0)

            t0 = time.monotonic()
            engine.start_many("bench-noop", [{} for _ in range(n_steps // STEPS)], run="bench")
            progress = engine.wait_for_run("bench", timeout=600, poll=0.05)
            elapsed = time.monotonic() - t0
            results["engine_steps_per_s"] = progress.counts["succeeded"] * STEPS / elapsed
            results["engine_failed"] = progress.counts["failed"]
    finally:
        delete_prefix(client, prefix)
    results["ratio_engine_vs_bare"] = results["engine_steps_per_s"] / results["bare_tasks_per_s"]
    results["ratio_engine_vs_chain"] = results["engine_steps_per_s"] / results["chain_steps_per_s"]
    return results
