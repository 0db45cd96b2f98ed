"""Scenario 7: waits of days, across worker and Redis restarts, on an injectable clock.

Every process of the lab (workers, beat, the test's engine) reads its clock as the wall clock
plus the offset in ``TRADEFLOW_CLOCK_OFFSET_FILE``; the test moves it days ahead.

Pass criterion: a 3-day wait is parked in Redis with no TTL; it survives a kill -9 of every
worker node and of Redis (restarted on its AOF) and two days of clock; it does not wake
early; it wakes exactly once, within seconds of its wake time; the step after it runs once;
the finished instance gets the retention TTL.
"""

from __future__ import annotations

import time
from pathlib import Path

from engine.instance import InstanceStatus, Outcome
from engine.testing import store_of
from tests.faults.harness import RETENTION_SECONDS, chain_definition, fault_lab
from tests.faults.invariants import check_invariants

DAY = 86400.0
#: A wait wakes within this many seconds of its wake time: a beat tick or two (about 1 s apart) on a
#: quiet machine; the margin is for a busy one -- waking a tick late is no fault, a day late is.
WAKE_BOUND = 60.0


def test_a_three_day_wait_resumes_once_on_time_across_restarts(tmp_path: Path) -> None:
    with fault_lab(tmp_path) as lab:
        body = chain_definition("days", ["before", "after"])
        body["nodes"]["before"]["transitions"]["ok"] = "three_days"
        body["nodes"]["three_days"] = {"type": "wait", "until": "now() + duration('72h')", "next": "after"}
        lab.publish(body)
        began = lab.now()
        ids = lab.engine.start_many("days", [{"key": f"d{i}"} for i in range(5)], run="days")
        lab.wait_until(lambda: all(i.status is InstanceStatus.WAITING for i in store_of(lab.engine).load_many(ids)),
                       120, "every instance parked in its wait")
        parked = lab.now()
        waiting = store_of(lab.engine).load_many(ids)
        # three days after the moment it parked, which lies between the start and the look (1 s: float error)
        assert all(i.wake_at is not None and began + 3 * DAY - 1 <= i.wake_at <= parked + 3 * DAY + 1
                   for i in waiting), ([i.wake_at for i in waiting], began, parked)
        assert [store_of(lab.engine).ttl(iid) for iid in ids] == [-1] * len(ids)

        lab.advance_clock(DAY)
        for name in list(lab.nodes):
            lab.kill_node(name)
        lab.redis.restart()
        for name in ("engine", "faults", "beat"):
            lab.start_node(name)
        lab.advance_clock(DAY)
        time.sleep(4)  # two days on, restarted: nothing may wake yet
        still = store_of(lab.engine).load_many(ids)
        assert all(i.status is InstanceStatus.WAITING for i in still)
        assert [i.wake_at for i in still] == [i.wake_at for i in waiting]
        assert [store_of(lab.engine).ttl(iid) for iid in ids] == [-1] * len(ids)

        wake_at = max(i.wake_at for i in waiting)
        lab.advance_clock(wake_at - lab.now() - 3)  # three seconds before the last wake time
        lab.wait_terminal(ids, timeout=120)
        figures = check_invariants(store_of(lab.engine), ids, "days")
        lateness = []
        for instance in waiting:
            [woke] = [a for a in store_of(lab.engine).activities(instance.id) if a["outcome"] == Outcome.WOKE.value]
            assert woke["started_at"] >= instance.wake_at
            lateness.append(woke["started_at"] - instance.wake_at)
        assert max(lateness) < WAKE_BOUND, lateness
        assert all(lab.calls()[f"d{i}:after"] == 1 for i in range(5))
        assert all(0 < store_of(lab.engine).ttl(iid) <= RETENTION_SECONDS for iid in ids)
        print(f"\nscenario 7 (3-day wait, clock moved 2 days, all nodes and Redis killed): {figures.line()}; "
              f"woke {min(lateness):.1f}-{max(lateness):.1f}s after the wake time; live TTL -1, finished TTL "
              f"{store_of(lab.engine).ttl(ids[0])}s")
