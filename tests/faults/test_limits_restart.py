"""A Redis restart (kill -9, back on its AOF) while steps -- or gather batches -- are parked by a rate
limit loses no instance and no batch."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.testing import store_of
from tests.faults.harness import chain_definition, fault_lab
from tests.faults.invariants import check_invariants


@pytest.mark.slow
def test_a_redis_restart_during_limiting_loses_no_instance(tmp_path: Path) -> None:
    with fault_lab(tmp_path) as lab:
        body = chain_definition("rated", ["a", "b"], timeout=10)
        body["nodes"]["a"]["limits"] = {"rate": {"key": "'upstream'", "per_second": 10, "burst": 10}}
        lab.publish(body)
        ids = lab.engine.start_many("rated", [{"key": f"r{i}"} for i in range(60)], run="rated")
        lab.wait_until(lambda: lab.engine.run_limited("rated").get("rate: upstream", 0) > 10, 60,
                       "steps parked by the limit")
        lab.redis.kill()
        time.sleep(2)
        lab.redis.restart()
        lab.wait_terminal(ids, timeout=180)
        check_invariants(store_of(lab.engine), ids, "rated")
        assert {i.status.value for i in store_of(lab.engine).load_many(ids)} == {"succeeded"}
        assert len(store_of(lab.engine).load_many(ids)) == 60
        assert lab.engine.run_limited("rated") == {}


@pytest.mark.slow
def test_a_redis_restart_while_batches_are_parked_by_a_limit_loses_none(tmp_path: Path) -> None:
    with fault_lab(tmp_path) as lab:
        lab.publish({"name": "blocks", "initial_data": {"type": "object"}, "start": "meet",
                     "nodes": {"meet": {"type": "gather", "service": "faults", "action": "batch",
                                        "group": "instance.run", "close": "timestamp('2099-01-01T00:00:00Z')",
                                        "input": {"n": "1"}, "transitions": {"ok": "done"},
                                        "retry": {"max_attempts": 5, "backoff_seconds": 1},
                                        "limits": {"rate": {"key": "'desk'", "per_second": 0.5, "burst": 1}}},
                               "done": {"type": "terminal", "status": "succeeded"}}})
        runs = [f"blocks-{n}" for n in range(5)]  # five batches, one step every 2 s
        ids = [lab.engine.start("blocks", {}, run=run) for run in runs]
        lab.wait_until(lambda: len(store_of(lab.engine).parked_batches()) >= 2, 60, "batches parked by the limit")
        lab.redis.kill()
        time.sleep(2)
        lab.redis.restart()
        lab.wait_terminal(ids, timeout=180)
        for iid, run in zip(ids, runs, strict=True):
            check_invariants(store_of(lab.engine), [iid], run)
        calls = {k: v for k, v in lab.calls().items() if k.startswith("batch:")}
        # every batch's step ran (a step caught by the kill itself may run again: its answer is kept once)
        assert len(calls) == 5 and all(n >= 1 for n in calls.values()), calls
        assert store_of(lab.engine).parked_batches() == []
        [state] = [s for s in lab.engine.limits() if s.name == "desk"]
        assert state.parked == 0 and state.waits >= 2
