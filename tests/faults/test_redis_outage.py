"""Scenario 6: Redis unreachable for 30 seconds mid-run.

Two kinds of unreachable: *frozen* (SIGSTOP: connections stay open and nothing answers, as
in a network partition or a stalled host) and *down* (the process is gone and connections are
refused, then it comes back on its AOF, as in a restart that takes 30 s).

Pass criterion: no worker has to be restarted; every instance finishes with one transition
per step; the transitions acknowledged before the outage are all there after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.testing import store_of
from tests.faults.harness import FaultLab, chain_definition, fault_lab
from tests.faults.invariants import check_invariants

OUTAGE_SECONDS = 30


def _run_through(lab: FaultLab, run: str, outage: Callable[[], None]) -> None:
    lab.publish(chain_definition("chain", ["a", "b", "c", "d"], timeout=10))
    ids = lab.engine.start_many("chain", [{"key": f"{run}{i}", "sleep": dict.fromkeys("abcd", 0.3)}
                                          for i in range(30)], run=run)
    lab.wait_until(lambda: lab.engine.progress(run).counts["succeeded"] >= 3, 60, "a few instances done")
    seqs = {i.id: i.seq for i in store_of(lab.engine).load_many(ids)}
    pids = {name: lab.node_pid(name) for name in lab.nodes}
    began = time.monotonic()
    outage()
    back = time.monotonic()
    lab.wait_terminal(ids, timeout=240)
    recovered = time.monotonic() - back
    after = {i.id: i.seq for i in store_of(lab.engine).load_many(ids)}
    assert all(after[iid] >= seq for iid, seq in seqs.items())
    assert {name: lab.node_pid(name) for name in lab.nodes} == pids  # nobody was restarted
    assert all(lab.nodes[name].procs[0].poll() is None for name in lab.nodes)
    figures = check_invariants(store_of(lab.engine), ids, run)
    log = lab.log_text()
    print(f"\nscenario 6 ({run}, {back - began:.0f} s): {figures.line()}; actions executed "
          f"{sum(lab.calls().values())} times for {figures.applied} steps; "
          f"done {recovered:.1f}s after Redis came back; "
          f"worker log: {log.count('Redis unreachable')} step retries of Redis, "
          f"{log.count('Cannot connect to redis')} broker reconnect attempts")


@pytest.mark.slow
def test_redis_frozen_for_30_seconds(tmp_path: Path) -> None:
    with fault_lab(tmp_path) as lab:
        _run_through(lab, "frozen", lambda: lab.redis.unreachable_for(OUTAGE_SECONDS))


@pytest.mark.slow
def test_redis_down_for_30_seconds(tmp_path: Path) -> None:
    def down() -> None:
        lab.redis.kill()
        time.sleep(OUTAGE_SECONDS)
        lab.redis.start()

    with fault_lab(tmp_path) as lab:
        _run_through(lab, "down", down)
