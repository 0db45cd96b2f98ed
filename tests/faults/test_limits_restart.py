"""A Redis restart (kill -9, back on its AOF) while steps are parked by a rate limit loses no instance."""

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
