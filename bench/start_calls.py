"""A drained batch's starts: one script call for the batch against one call each, Redis's CPU and the worker's.

    .venv/bin/python -m bench.start_calls [--starts 16000] [--batch 16] [--rounds 2]

In a sandbox of its own (:mod:`bench.sandbox`) on the Redis at ``TRADEFLOW_REDIS_URL``, each
round creates ``--starts`` instances of a one-step workflow (queued, as a morning's are) for
each way, then starts them ``--batch`` at a time, as a worker draining its queue does:

- **one call each**: every start its own ``state.lua`` call, pipelined in one round trip
  (:func:`engine.testing.start_each`, as batches were started before ``start_many``);
- **start_many**: :meth:`engine.store.instances.Instances.prefetch_starts`, one call a batch.

Printed per way and round: Redis's CPU (``used_cpu_user + used_cpu_sys`` of the whole server)
and this process's CPU, in microseconds per start. Use a redis-server of its own: other clients'
work would count as Redis's.
"""

from __future__ import annotations

import argparse
import json
import os
import time

FLOW = {
    "name": "start-calls",
    "start": "work",
    "nodes": {
        "work": {"type": "service", "service": "svc", "action": "work", "input": {}, "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}


def _redis_cpu(client: object) -> float:
    info = client.info("cpu")  # type: ignore[attr-defined]
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(redis_url: str, starts: int, batch: int, one_call: bool) -> tuple[float, float]:
    """(Redis µs, this process's µs) per start, starting ``starts`` queued instances ``batch`` at a time."""
    from bench.sandbox import Sandbox
    from engine.api import Engine, StartItem
    from engine.broker import MemoryEnqueuer
    from engine.definitions.validation import load_definition
    from engine.testing import start_each

    with Sandbox(redis_url) as sandbox:
        store = sandbox.store
        engine = Engine(store, MemoryEnqueuer())
        engine.publish(load_definition(json.dumps(FLOW)))
        ids = engine.start_many("start-calls", [StartItem({}, f"s{n}") for n in range(starts)])
        steps = [(iid, "work", 1, 1, f"work:1:1@bench:{os.getpid()}") for iid in ids]
        server, own = _redis_cpu(sandbox.client), time.process_time()
        for first in range(0, len(steps), batch):
            chunk = steps[first:first + batch]
            if one_call:
                start_each(store, chunk, time.time)
            else:
                store.prefetch_starts(chunk, time.time)
            for step in chunk:  # nothing runs the steps: drop the kept replies
                store.forget_start(*step)
        return ((_redis_cpu(sandbox.client) - server) * 1e6 / len(steps),
                (time.process_time() - own) * 1e6 / len(steps))


def main(argv: list[str] | None = None) -> None:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.start_calls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=16000, help="instances started per way and round")
    parser.add_argument("--batch", type=int, default=16, help="starts per batch (TRADEFLOW_DRAIN_STEPS' default)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, the two ways alternated in each")
    args = parser.parse_args(argv)
    url = os.environ.get("TRADEFLOW_REDIS_URL", "redis://127.0.0.1:6379/0")
    for round_ in range(1, args.rounds + 1):
        for name, one_call in (("one call each", True), ("start_many", False)):
            redis_us, own_us = measure(url, args.starts, args.batch, one_call)
            print(f"round {round_}: {name:14s} Redis {redis_us:6.1f} µs, worker {own_us:6.1f} µs per start")


if __name__ == "__main__":
    main()
