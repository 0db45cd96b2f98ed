"""Scenario 2: the same step delivered twice at the same moment.

The race is forced: the step's action (``faults.barrier``) lets neither delivery go on until
both are inside it, so both pass the stale-message check and both try to apply.

Pass criterion: one delivery applies, the other is recorded as a no-op ("another delivery
applied first"); the next step is enqueued and executed once; the applied record, the context
and (when the step was the last) the finished instance are never overwritten by the late
duplicate.
"""

from __future__ import annotations

from pathlib import Path

from engine.instance import Outcome
from engine.runtime.outcomes import step_message
from engine.testing import enqueuer_of, store_of
from tests.faults.harness import FaultLab, chain_definition, fault_lab
from tests.faults.invariants import check_invariants


def _race(lab: FaultLab, workflow: str, key: str) -> str:
    """Start one instance and publish a second copy of its first step at once."""
    iid = lab.engine.start(workflow, {"key": key}, run="race")
    node = lab.engine.definition(workflow).nodes["race"]
    enqueuer_of(lab.engine).enqueue(step_message("race", node, iid, 1, 1))
    lab.wait_terminal([iid], timeout=180)
    # The instance ends with the winner's transition (or the next step's), while the losing delivery,
    # let out of the barrier at the same moment, may still be on its way to its no-op: on a busy
    # machine its record lands after the end. Wait for that record, not for a clock.
    lab.wait_until(lambda: any(a["outcome"] == Outcome.NOOP.value for a in store_of(lab.engine).activities(iid)),
                   120, f"the losing delivery of {iid} to be recorded as a no-op")
    return iid


def test_a_step_delivered_twice_at_once_applies_once(tmp_path: Path) -> None:
    with fault_lab(tmp_path) as lab:
        for name, nodes in (("race-then-step", ["race", "after"]), ("race-last", ["race"])):
            body = chain_definition(name, nodes, timeout=300)  # no re-send while the barrier waits
            body["nodes"]["race"]["action"] = "barrier"
            lab.publish(body)
        ids = [_race(lab, "race-then-step", f"r{i}") for i in range(3)]
        last = [_race(lab, "race-last", f"e{i}") for i in range(2)]
        figures = check_invariants(store_of(lab.engine), ids + last, "race")
        calls = lab.calls()
        for iid in ids + last:
            key = lab.engine.get(iid).data["key"]
            assert calls[f"{key}:race"] == 2  # both deliveries ran the action, side by side
            assert calls.get(f"{key}:after", 1) == 1  # the next step was enqueued once
            acts = store_of(lab.engine).activities(iid)
            [won] = [a for a in acts if a["node"] == "race" and a["outcome"] == Outcome.APPLIED.value]
            [lost] = [a for a in acts if a["node"] == "race" and a["outcome"] == Outcome.NOOP.value]
            assert lost["reason"] == "another delivery applied first"
            assert lost["worker"] != won["worker"]
            instance = lab.engine.get(iid)
            assert instance.context["race"] == won["received"]  # the winner's data, not the loser's
            assert acts.index(won) < acts.index(lost)
        for iid in last:
            instance = lab.engine.get(iid)
            finished = [a for a in store_of(lab.engine).activities(iid) if a["outcome"] == Outcome.APPLIED.value]
            assert instance.finished_at is not None and finished[-1]["next"] == "done"
            assert instance.updated_at == instance.finished_at  # the late duplicate wrote nothing after
            assert 0 < store_of(lab.engine).ttl(iid) <= 3600  # still the retention TTL set when it finished
        assert figures.noops == len(ids + last)
        print(f"\nscenario 2 (simultaneous duplicate): {len(ids + last)} races; {figures.line()}; "
              f"next steps executed once each")
