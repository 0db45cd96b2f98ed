"""What one Redis round trip costs on this machine, apart from the work it carries.

    .venv/bin/python -m bench.round_trip_cost [--calls 20000] [--batch 10] [--rounds 3]

The same small script call (``EVALSHA`` of one ``HSET``, as the engine's changes are script
calls) is sent ``--calls`` times, alternately one per round trip and ``--batch`` per round trip
(a pipeline), ``--rounds`` times each. Printed per call, the median of the rounds: Redis's CPU
(INFO ``used_cpu_user + used_cpu_sys``: the whole server's, so run it on a Redis of its own),
this process's CPU (the client: redis-py, the socket calls) and the wall time. The difference
between the two ways is what a round trip itself costs -- the system calls, the wake-ups and
the context switches on both sides -- and so what sending several changes together would save:
the figure behind the engine's riders and behind any batching of changes
(:mod:`bench.round_trips` counts the engine's round trips per step and per account).

The keys are under a random prefix on the Redis at ``TRADEFLOW_REDIS_URL`` and deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from typing import Any

import redis

from bench.cpu import redis_cpu_seconds

#: One field written, as small as a script call gets: what is left is the call and its round trip.
SCRIPT = "redis.call('HSET', KEYS[1], 'v', ARGV[1]) return 1"
#: The calls spread over this many keys.
KEYS = 100


def measure(client: redis.Redis, calls: int, batch: int, prefix: str) -> dict[str, float]:
    """Send ``calls`` script calls, ``batch`` per round trip; microseconds per call of Redis's CPU, this
    process's CPU and the wall clock."""
    sha = client.script_load(SCRIPT)
    redis_before, cpu_before, wall_before = redis_cpu_seconds(client), time.process_time(), time.perf_counter()
    for first in range(0, calls, batch):
        if batch == 1:
            client.evalsha(sha, 1, f"{prefix}{first % KEYS}", first)
            continue
        pipe = client.pipeline(transaction=False)
        for number in range(first, min(first + batch, calls)):
            pipe.evalsha(sha, 1, f"{prefix}{number % KEYS}", number)
        pipe.execute()
    wall, cpu = time.perf_counter() - wall_before, time.process_time() - cpu_before
    server = redis_cpu_seconds(client) - redis_before
    return {"redis_us": 1e6 * server / calls, "client_us": 1e6 * cpu / calls, "wall_us": 1e6 * wall / calls}


def run(client: redis.Redis, calls: int, batch: int, rounds: int) -> dict[str, Any]:
    """Both ways ``rounds`` times, alternated; the median of each figure, and what a round trip adds."""
    prefix = f"bench-rtc-{uuid.uuid4().hex[:8]}:"
    found: dict[int, list[dict[str, float]]] = {1: [], batch: []}
    try:
        for number in range(rounds):
            for size in ((1, batch) if number % 2 == 0 else (batch, 1)):
                found[size].append(measure(client, calls, size, prefix))
    finally:
        client.delete(*[f"{prefix}{key}" for key in range(KEYS)])
    medians = {size: {name: round(statistics.median(r[name] for r in results), 1) for name in results[0]}
               for size, results in found.items()}
    alone, together = medians[1], medians[batch]
    saved = {name: round((alone[name] - together[name]) * batch / (batch - 1), 1) for name in alone}
    return {"calls": calls, "batch": batch, "rounds": rounds, "one_per_round_trip": alone,
            f"{batch}_per_round_trip": together, "a_round_trip_costs": saved}


def main(argv: list[str] | None = None) -> None:
    """Print what a round trip costs, per call, as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.round_trip_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=10, help="calls per round trip in the pipelined way (> 1)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.batch < 2:
        parser.error("--batch must be 2 or more")
    client = redis.Redis.from_url(os.environ.get("TRADEFLOW_REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        print(json.dumps(run(client, args.calls, args.batch, args.rounds), indent=1))
    finally:
        client.close()


if __name__ == "__main__":
    main()
