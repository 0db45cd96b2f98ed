"""What beat's housekeeping costs behind a deep queue: a tick, a sweep and a reconciliation.

    .venv/bin/python -m bench.housekeeping [--backlog 1000,20000,100000] [--passes 5]

In a sandbox on the Redis at ``TRADEFLOW_REDIS_URL``, ``N`` instances of a one-step workflow
are started with their step messages on the Redis broker's list (no worker takes them: the
backlog of a morning's start), then each housekeeping pass a worker runs for beat is timed
(CPU of this process and wall time, median of ``--passes``): the timer tick, the sweep of
overdue deadlines, and the reconciliation of queued steps with the broker -- once while the
backlog is younger than ``FULL_CHECK_PERIODS`` reconcile periods, and once as if it were older
(the clock of the reconciliation moved on), as at the end of a 100,000-account morning. The
figure that must stay flat as ``N`` grows is the cost per pass: a pass runs every second
(tick, sweep) or minute (reconciliation) whatever the book size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from bench.sandbox import Sandbox
from engine.api import Engine
from engine.broker import RedisQueueEnqueuer
from engine.definitions.validation import load_definition
from engine.testing import runtime_of

FLOW = {"name": "hk-one", "initial_data": {"type": "object"}, "start": "work",
        "nodes": {"work": {"type": "service", "service": "hk", "action": "noop", "input": {},
                           "transitions": {"ok": "done"}, "timeout_seconds": 60},
                  "done": {"type": "terminal", "status": "succeeded"}}}


def _timed(call: Any, passes: int, before: Any = None) -> dict[str, float]:
    """Median CPU and wall milliseconds of ``passes`` calls, and the slowest wall time."""
    cpu, wall = [], []
    for _ in range(passes):
        if before:
            before()
        c, w = time.process_time(), time.perf_counter()
        call()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return {"cpu_ms": round(statistics.median(cpu) * 1000, 2), "wall_ms": round(statistics.median(wall) * 1000, 2),
            "max_wall_ms": round(max(wall) * 1000, 2)}


def run(redis_url: str, backlog: int, passes: int = 5) -> dict[str, Any]:
    """Time each housekeeping pass behind ``backlog`` queued step messages."""
    from engine.runtime.concerns import timeouts

    with Sandbox(redis_url) as sandbox:
        queue = RedisQueueEnqueuer.for_app(sandbox.engine_app(), sandbox.client)
        engine = Engine(sandbox.store, queue)
        engine.publish(load_definition(json.dumps(FLOW)))
        engine.start_many("hk-one", [{} for _ in range(backlog)], run="hk")
        runtime = runtime_of(engine)
        lock = sandbox.store.keys.reconcile_lock

        def unlocked() -> None:
            sandbox.client.delete(lock)

        figures = {"backlog": backlog, "queued": sandbox.store.queued_count(),
                   "tick": _timed(runtime.tick, passes), "sweep": _timed(runtime.sweep, passes)}
        real = timeouts.time
        for name, age in (("reconcile_young", 61.0), ("reconcile_old", 60.0 * timeouts.FULL_CHECK_PERIODS + 5)):
            later = time.time() + age

            class _Later:  # the reconciliation's wall clock, moved on: the backlog is that old
                @staticmethod
                def time(at: float = later) -> float:
                    return at

            timeouts.time = _Later  # type: ignore[assignment]
            try:
                figures[name] = _timed(lambda: runtime.reconcile(every=60), passes, unlocked)
            finally:
                timeouts.time = real
    return figures


def main() -> None:
    """Print the cost of each pass at each backlog."""
    from engine.config import Settings
    from engine.connections import state_url

    parser = argparse.ArgumentParser(prog="python -m bench.housekeeping", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", default="1000,20000,100000", help="queued steps (comma-separated)")
    parser.add_argument("--passes", type=int, default=5, help="passes timed per figure (median)")
    args = parser.parse_args()
    url = state_url(Settings.from_env(), allow_start=True)
    print(f"{'backlog':>8} {'pass':>16} {'CPU ms':>8} {'wall ms':>8} {'slowest':>8}")
    for n in (int(x) for x in args.backlog.split(",")):
        figures = run(url, n, args.passes)
        for name in ("tick", "sweep", "reconcile_young", "reconcile_old"):
            f = figures[name]
            print(f"{n:>8,} {name:>16} {f['cpu_ms']:>8.2f} {f['wall_ms']:>8.2f} {f['max_wall_ms']:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
