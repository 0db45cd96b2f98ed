"""Scenario 5: Redis ``kill -9`` mid-run, then restarted on its AOF, or restarted empty.

Pass criteria. On the same data (AOF, ``appendfsync always``): every transition Redis had
acknowledged before the kill is still there afterwards (each instance's seq and history at
least what a snapshot read just before the kill showed), and every instance finishes with
one transition per step. Restarted empty: tradeflow notices (the epoch key is gone) and
says so: workers that knew the old data set log CRITICAL ``DataSetLost`` on their timer and
sweeper ticks, and the Engine refuses to report progress of the lost run.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.errors import DataSetLost
from engine.testing import store_of
from tests.faults.harness import FaultLab, chain_definition, fault_lab
from tests.faults.invariants import check_invariants


def _snapshot(lab: FaultLab, ids: list[str]) -> dict[str, tuple[int, int]]:
    """(seq, number of activity records) of each instance, as Redis acknowledges them now."""
    pipe = lab.client.pipeline(transaction=False)
    for iid in ids:
        pipe.hget(store_of(lab.engine).keys.instance(iid), "seq")
        pipe.llen(store_of(lab.engine).keys.activities(iid))
    flat = pipe.execute()
    return {iid: (int(flat[2 * n]), int(flat[2 * n + 1])) for n, iid in enumerate(ids)}


def _start(lab: FaultLab, run: str, count: int) -> list[str]:
    lab.publish(chain_definition("chain", ["a", "b", "c", "d"], timeout=5))
    return lab.engine.start_many("chain", [{"key": f"{run}{i}", "sleep": dict.fromkeys("abcd", 0.2)}
                                           for i in range(count)], run=run)


@pytest.mark.slow
def test_redis_kill9_then_restart_on_its_aof_loses_no_acknowledged_transition(tmp_path: Path) -> None:
    with fault_lab(tmp_path) as lab:
        ids = _start(lab, "aof", 30)
        lab.wait_until(lambda: sum(s for s, _ in _snapshot(lab, ids).values()) >= 30 + 20, 60,
                       "20 transitions applied")
        before = _snapshot(lab, ids)
        lab.redis.kill()
        killed_at = time.monotonic()
        time.sleep(2)
        lab.redis.restart()
        after = _snapshot(lab, ids)
        lost = {iid: (before[iid], after[iid]) for iid in ids
                if after[iid][0] < before[iid][0] or after[iid][1] < before[iid][1]}
        assert not lost, f"acknowledged transitions lost: {lost}"
        lab.wait_terminal(ids, timeout=150)
        recovered = time.monotonic() - killed_at
        figures = check_invariants(store_of(lab.engine), ids, "aof")
        applied_before = sum(s - 1 for s, _ in before.values())
        print(f"\nscenario 5 (Redis kill -9, AOF fsync always, down 2 s): {applied_before} transitions applied "
              f"before the kill, none lost; {figures.line()}; all done {recovered:.1f}s after the kill")


def test_redis_restarted_empty_is_detected(tmp_path: Path) -> None:
    """Beat starts only after the loss, so the engine node runs its first tick on the empty
    Redis: it must still compare with the data set it started on, not adopt the new one."""
    with fault_lab(tmp_path, beat=False) as lab:
        ids = _start(lab, "empty", 10)
        lab.wait_until(lambda: any(store_of(lab.engine).activities(i)[-1]["outcome"] == "applied" for i in ids), 60,
                       "a transition applied")
        lab.wait_until(lambda: lab.log_text().count("ready.") >= 2, 60, "both worker nodes ready")
        assert lab.engine.progress("empty").total == 10
        lab.redis.restart_empty()
        detected_at = time.monotonic()
        with pytest.raises(DataSetLost, match="Redis lost tradeflow's data"):
            lab.engine.progress("empty")
        lab.start_node("beat")
        lab.wait_until(lambda: "DataSetLost" in lab.log_text() and "CRITICAL" in lab.log_text(), 60,
                       "a worker to log DataSetLost at CRITICAL")
        waited = time.monotonic() - detected_at
        criticals = [line for line in lab.log_text().splitlines() if "CRITICAL" in line]
        assert any("Redis lost tradeflow's data" in line for line in criticals), criticals[:5]
        print(f"\nscenario 5 (Redis restarted empty): Engine.progress raised DataSetLost at once; the engine node, "
              f"whose first tick came after the loss, logged CRITICAL {waited:.1f}s after it "
              f"({len(criticals)} CRITICAL lines)")
