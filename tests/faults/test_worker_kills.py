"""Scenario 1: SIGKILL of a prefork child mid-step, and of a whole worker node.

Pass criterion: every instance completes; exactly one applied transition per step (the
invariant checker); a step killed mid-action runs again; a step killed after it applied its
transition but before its message was acknowledged is redelivered and recorded as a no-op;
the messages a killed node held are re-sent (by the sweeper once the liveness marks of the
processes running them lapsed, or at node timeout + 5 s, or given back to their queue by the
reconciliation once the node's consumer mark lapsed), their redeliveries are no-ops, and kombu's
unacked hash is left with live consumers' entries only.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from engine.broker import RedisQueueEnqueuer
from engine.instance import Outcome
from engine.ops.fleet import FleetSpec
from engine.testing import store_of
from tests.faults.harness import FaultLab, chain_definition, fault_lab
from tests.faults.invariants import check_invariants


def _acts(lab: FaultLab, iid: str, outcome: Outcome) -> list[dict]:
    return [a for a in store_of(lab.engine).activities(iid) if a["outcome"] == outcome.value]


def test_sigkill_of_a_prefork_child_mid_step_and_after_apply_before_ack(tmp_path: Path) -> None:
    """Kill the child running a step (it runs again, applies once), then kill the child that
    applied a step but has not acknowledged its message (the redelivery is a no-op).

    Every step here is delivered by Celery (no draining): the scenario is a message's own
    delivery, apply and ack, and the linger hook holds a process after a delivered task."""
    with fault_lab(tmp_path, env={"TRADEFLOW_DRAIN_STEPS": "0"}) as lab:
        lab.publish(chain_definition("chain", ["a", "b", "c"]))
        began = time.monotonic()
        gate = tmp_path / "gate-b"  # every b waits in its action until the victim is dead
        ids = lab.engine.start_many("chain", [{"key": f"k{i}", "gate": {"b": str(gate)}, "announce": ["b"]}
                                              for i in range(8)], run="child-kill")
        lingerer = ids[-1]
        lab.client.hset(f"{lab.prefix}:linger", lingerer, 30)
        lab.wait_until(lambda: lab.busy(), 60, "a step of node b to start")
        victim, key, _ = lab.busy()[0]
        os.kill(victim, signal.SIGKILL)  # inside its action: mid-step, however slow the machine
        gate.touch()
        lab.wait_until(lambda: lab.client.llen(f"{lab.prefix}:lingering"), 60, "the lingering child")
        lingering_pid = int(lab.client.lindex(f"{lab.prefix}:lingering", 0).decode().split(":")[0])
        assert lab.engine.get(lingerer).status.is_terminal  # applied its last step, message not acked yet
        os.kill(lingering_pid, signal.SIGKILL)
        lab.wait_terminal(ids, timeout=120)
        lab.wait_until(lambda: _acts(lab, lingerer, Outcome.NOOP), 60, "the redelivery of the acked-late step")
        recovered = time.monotonic() - began
        figures = check_invariants(store_of(lab.engine), ids, "child-kill")
        calls = lab.calls()
        assert calls[f"{key}:b"] == 2  # the killed execution, then the redelivered one
        assert sum(n for k, n in calls.items() if k.endswith(":b")) == 9
        noops = _acts(lab, lingerer, Outcome.NOOP)
        assert len(noops) == 1 and noops[0]["reason"].startswith("stale delivery"), noops
        killed = next(iid for iid in ids if lab.engine.get(iid).data["key"] == key)
        [applied_b] = [a for a in _acts(lab, killed, Outcome.APPLIED) if a["node"] == "b"]
        assert f":{victim}:" not in applied_b["worker"]
        [takeover] = _acts(lab, killed, Outcome.NOOP)  # the redelivered message, recorded before it ran b again
        assert takeover["reason"].startswith("stale delivery"), takeover
        print(f"\nscenario 1 (child kill): 2 children killed (mid-step, after apply before ack); {figures.line()}; "
              f"re-executed actions 1; all done in {recovered:.1f}s")


@pytest.mark.slow
def test_sigkill_of_a_whole_worker_node(tmp_path: Path) -> None:
    """Kill the faults node (main process and its children) with steps in flight and start it
    again: the steps it held come back (the sweeper, the reconciliation giving the dead node's
    deliveries back to their queue); every extra delivery changes nothing, and the dead node's
    entries leave kombu's unacked hash (they used to stay until the visibility timeout)."""
    nodes = {"engine": FleetSpec("engine", "threads", 2), "faults": FleetSpec("faults", "prefork", 2)}
    with fault_lab(tmp_path, nodes) as lab:
        lab.publish(chain_definition("chain", ["a", "b", "c"], timeout=4))
        ids = lab.engine.start_many("chain", [{"key": f"n{i}", "sleep": {"b": 1.5}, "announce": ["b"]}
                                              for i in range(10)], run="node-kill")
        lab.wait_until(lambda: len(lab.busy()) >= 2, 60, "two steps of node b in flight")
        broker = RedisQueueEnqueuer(lab.client, f"{lab.prefix}:q:")
        held = [d for d in broker.deliveries() if d.step is not None]
        killed_at = time.monotonic()
        pids = lab.kill_node("faults")
        lab.start_node("faults")
        lab.wait_terminal(ids, timeout=150)
        recovered = time.monotonic() - killed_at
        figures = check_invariants(store_of(lab.engine), ids, "node-kill")
        assert held and figures.sweeper_resends + figures.liveness_resends + figures.noops >= 1
        # A dead node's delivery is given back to its queue and delivered again under the same tag
        # (kombu keeps it in the message): gone once the live node has run it (a no-op) and acked it.
        lab.wait_until(lambda: all(d.held is True for d in broker.deliveries())
                       and not {d.tag for d in held} & {d.tag for d in broker.deliveries()}, 60,
                       "the dead node's deliveries to leave kombu's unacked hash")
        final = check_invariants(store_of(lab.engine), ids, "node-kill")
        print(f"\nscenario 1 (node kill): killed {len(pids)} processes; step messages held by the dead node "
              f"{len(held)}; {final.line()}; all done {recovered:.1f}s after the kill; unacked hash: "
              f"{lab.client.hlen(f'{lab.prefix}:q:unacked')} entries, all of live consumers")
