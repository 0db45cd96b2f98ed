"""Worker liveness on real workers: a dead worker's started steps move again in seconds, not at their timeout.

Every step here has a 300 s timeout: only the liveness marks can explain a recovery within 15 s.

- A node SIGKILLed while holding delivered step messages (each being run by one of its pool
  children): the sweeper finds their processes' marks lapsed and re-sends each as its next
  attempt; another node runs it; one transition per step, each run once more.
- A worker SIGSTOPped mid-step: its mark lapses, its step is re-sent and applied elsewhere (one
  effect under the step's idempotency key); resumed, the stopped worker ends its step as a
  recorded no-op and finds its effect already sent.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from engine.instance import Outcome
from engine.ops.fleet import FleetSpec
from engine.runtime.concerns.liveness import process_of
from engine.testing import store_of
from tests.faults.harness import FaultLab, chain_definition, fault_lab
from tests.faults.invariants import check_invariants

#: The feature under test: a SIGKILLed worker's started steps move again within this many seconds,
#: far below their 300 s timeout (its mark lapses within 5 s, the sweeper runs every 2 s, the step
#: then runs for 1 s: about 8 s on a quiet machine; the margin is for a busy one, the wait returns
#: as soon as they moved).
RECOVERY_BOUND = 60.0


def _held_by(lab: FaultLab, pids: set[int]) -> dict[str, tuple[int, int]]:
    """Instance id -> (seq, attempt) of every started step whose carrier is one of ``pids``."""
    out = {}
    for step in store_of(lab.engine).started_steps(1000):
        process = process_of(step.carrier)
        if process is not None and int(process.rpartition(":")[2]) in pids:
            out[step.id] = (step.seq, step.attempt)
    return out


def _acts(lab: FaultLab, iid: str, outcome: Outcome) -> list[dict]:
    return [a for a in store_of(lab.engine).activities(iid) if a["outcome"] == outcome.value]


def test_a_killed_nodes_started_steps_move_again_within_seconds(tmp_path: Path) -> None:
    nodes = {"engine": FleetSpec("engine", "threads", 2), "faults": FleetSpec("faults", "prefork", 2),
             "spare": FleetSpec("faults", "prefork", 2)}
    with fault_lab(tmp_path, nodes, env={"TRADEFLOW_DRAIN_STEPS": "0"}) as lab:
        lab.publish(chain_definition("chain", ["a", "b", "c"], timeout=300))
        gate = tmp_path / "gate-b"  # every b waits in its action until the faults node is dead
        ids = lab.engine.start_many("chain", [{"key": f"n{i}", "sleep": {"b": 1.0}, "announce": ["b"],
                                               "gate": {"b": str(gate)}} for i in range(12)], run="liveness-kill")

        def both_children_in_b() -> bool:
            children = set(lab.node_children("faults"))
            return len({pid for pid, _key, node in lab.busy() if pid in children and node == "b"}) >= 2

        lab.wait_until(both_children_in_b, 120, "a step b started by each child of the faults node")
        victims = {lab.node_pid("faults"), *lab.node_children("faults")}
        held = _held_by(lab, victims)
        killed_at = time.monotonic()
        lab.kill_node("faults")  # not restarted: the spare node takes the steps over
        gate.touch()

        def moved() -> bool:
            now = {i.id: i for i in store_of(lab.engine).load_many(list(held))}
            return all(iid in now and (now[iid].status.is_terminal or now[iid].seq > seq)
                       for iid, (seq, _attempt) in held.items())

        # The bound is the feature under test: 300 s timeouts, recovery by the liveness marks.
        lab.wait_until(moved, RECOVERY_BOUND, lambda: f"the killed node's steps {held} to move again")
        recovered = time.monotonic() - killed_at
        lab.wait_terminal(ids, timeout=120)
        figures = check_invariants(store_of(lab.engine), ids, "liveness-kill")
        calls = lab.calls()
        applied_at = {iid: [a for a in _acts(lab, iid, Outcome.APPLIED) if a["seq"] == seq]
                      for iid, (seq, _attempt) in held.items()}
        # A step the node finished between the look and the kill (a busy machine) was not held when it
        # died: its own transition, nothing re-sent. The others are what the feature is about.
        ended_before = {iid for iid, [applied] in applied_at.items()
                        if any(f":{pid}:" in applied["worker"] for pid in victims)}
        assert len(ended_before) < len(held), f"every step the node held ended before the kill: {held}"
        by_liveness = 0
        for iid, (seq, attempt) in held.items():
            resent = [a for a in _acts(lab, iid, Outcome.RETRY) if a["seq"] == seq]
            [applied] = applied_at[iid]
            if iid in ended_before:
                assert not resent and calls[f"{lab.engine.get(iid).data['key']}:{applied['node']}"] == 1, calls
                continue
            if resent:  # re-sent by the sweeper when the dead process's mark lapsed
                assert len(resent) == 1 and resent[0]["error"].startswith("worker lost:"), resent
                assert resent[0]["attempt"] == attempt
                assert applied["attempt"] == attempt + 1
                by_liveness += 1
            else:  # or the dead node's own delivery, given back to its queue, ran first on the spare
                assert applied["attempt"] == attempt
            assert not any(f":{pid}:" in applied["worker"] for pid in victims)
            key = lab.engine.get(iid).data["key"]
            node = applied["node"]
            # killed mid-step (or before its action), then run once by the spare node
            assert calls[f"{key}:{node}"] in (1, 2), calls
        assert figures.liveness_resends == by_liveness and figures.sweeper_resends == 0
        print(f"\nliveness (node kill): {len(held)} started steps held by the killed node moved again "
              f"{recovered:.1f}s after the kill (step timeout 300 s); {figures.line()}")


def test_a_stalled_worker_whose_step_was_resent_ends_as_a_recorded_noop(tmp_path: Path) -> None:
    nodes = {"engine": FleetSpec("engine", "threads", 2), "faults": FleetSpec("faults", "prefork", 2)}
    with fault_lab(tmp_path, nodes, env={"TRADEFLOW_DRAIN_STEPS": "0"}) as lab:
        lab.publish(chain_definition("chain", ["a", "b"], action="submit", timeout=300))
        gate = tmp_path / "gate-b"  # step b waits in its action until its process is stopped
        [iid] = lab.engine.start_many("chain", [{"key": "s0", "gate": {"b": str(gate)}, "announce": ["b"]}],
                                      run="liveness-stop")
        lab.wait_until(lambda: lab.busy(), 60, "step b to start")
        stalled, _key, _node = lab.busy()[0]
        os.kill(stalled, signal.SIGSTOP)  # inside its action, however slow the machine
        gate.touch()  # the re-sent attempt goes through; the stopped one goes on when resumed
        try:
            seq_b = lab.engine.get(iid).seq
            # The bound is the feature under test: the stalled process's mark lapses, the step is
            # re-sent and applied by the other child, long before its 300 s timeout.
            lab.wait_until(lambda: lab.engine.get(iid).status.is_terminal, RECOVERY_BOUND,
                           "step b re-sent and applied while its first worker is stopped")
        finally:
            os.kill(stalled, signal.SIGCONT)
        lab.wait_until(lambda: _acts(lab, iid, Outcome.NOOP), 60, "the resumed worker's step to end as a no-op")
        figures = check_invariants(store_of(lab.engine), [iid], "liveness-stop")
        history = [a for a in store_of(lab.engine).activities(iid) if a["seq"] == seq_b]
        assert [a["outcome"] for a in history] == ["retry", "applied", "noop"], history
        retry, applied, noop = history
        assert retry["error"].startswith("worker lost:") and f":{stalled}" in retry["error"]
        assert applied["attempt"] == 2 and f":{stalled}:" not in applied["worker"]
        assert noop["attempt"] == 1 and f":{stalled}:" in noop["worker"]
        assert noop["reason"] == "another delivery applied first"
        assert lab.calls()["s0:b"] == 2  # the stalled execution finished too ...
        effects = {k.decode(): int(v) for k, v in lab.client.hgetall(f"{lab.prefix}:effects").items()}
        refusals = {k.decode(): int(v) for k, v in lab.client.hgetall(f"{lab.prefix}:effect_refusals").items()}
        assert effects == {"s0:a": 1, "s0:b": 1} and refusals == {"s0:b": 1}  # ... with no second effect
        print(f"\nliveness (SIGSTOP): step re-sent while its worker was stopped, applied once, the resumed "
              f"worker's result a no-op, one effect; {figures.line()}")
