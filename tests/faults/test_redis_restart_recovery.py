"""Started steps move again within seconds of a Redis ``kill -9`` and restart on its AOF.

What broke (the chaos soak, issue 21): Redis was down while a worker process ran a step inline
after its delivered one; writing that step's result failed, and the worker tried its delivery
again once Redis answered (``patiently``). The instance was at the inline step by then, carried
by this very process: the delivery was stale, recorded as a no-op, and the inline step was left
to nobody -- the process's liveness mark stayed fresh, so only the step's timeout re-sent it.
Here every ``b`` in flight (run inline after ``a``) loses the write of its result: the steps ``b``
wait in their action for a gate file; Redis is killed once both worker slots hold one there, the
gate opens, and Redis starts again only after each held ``b`` returned and its thread found Redis
unreachable (the service marks both by the gate). Nothing is timed: on a slow machine every wait
just takes longer. The retried delivery then resumes ``b`` in the same process.

Every step here has a 300 s timeout: a recovery within ``RECOVERY_BOUND`` cannot come from the
sweeper's timeout, only from the worker processes that held the started steps (they stayed
alive) or from the liveness concern noticing that they no longer run them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from engine.ops.fleet import FleetSpec
from engine.testing import store_of
from tests.faults.harness import FaultLab, chain_definition, fault_lab
from tests.faults.invariants import check_invariants

#: The feature under test: after Redis came back, every step started before its kill moves again
#: within this many seconds, far below the steps' 300 s timeout (a few seconds on a quiet machine;
#: the margin is for a busy one, the wait returns as soon as they moved).
RECOVERY_BOUND = 60.0
#: Generous bounds on the waits for the worker processes (they return as soon as the condition holds).
HELD_BOUND = 120.0
WRITE_FAILED_BOUND = 90.0


def _started(lab: FaultLab) -> dict[str, tuple[int, int]]:
    """Instance id -> (seq, attempt) of every started step."""
    return {s.id: (s.seq, s.attempt) for s in store_of(lab.engine).started_steps(1000)}


def _histories(lab: FaultLab, ids: dict[str, tuple[int, int]]) -> str:
    """Where each of ``ids`` stands and its history, for a failure message."""
    out = []
    for instance in store_of(lab.engine).load_many(list(ids)):
        out.append(f"{instance.id}: {instance.status.value} at {instance.node} seq {instance.seq} attempt "
                   f"{instance.attempt}, carrier {instance.carrier}")
        out += [f"    {a}" for a in store_of(lab.engine).activities(instance.id)]
    return "\n".join(out)


def _held_in_gate(lab: FaultLab, key_of: dict[str, str]) -> dict[str, tuple[int, int]] | None:
    """The started steps when there are two or more and each is a ``b`` inside its action (announced),
    else None: the worker slots are then all held by the gate, nothing else moves."""
    started = {s.id: (s.node, s.seq, s.attempt) for s in store_of(lab.engine).started_steps(1000)}
    announced = {key for _pid, key, node in lab.busy() if node == "b"}
    if len(started) < 2 or any(node != "b" or key_of[iid] not in announced for iid, (node, _, _) in started.items()):
        return None
    return {iid: (seq, attempt) for iid, (_node, seq, attempt) in started.items()}


@pytest.mark.faults
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_started_steps_move_again_within_seconds_of_a_redis_restart(tmp_path: Path, pool: str) -> None:
    nodes = {"engine": FleetSpec("engine", "threads", 2), "faults": FleetSpec("faults", pool, 2)}
    with fault_lab(tmp_path, nodes) as lab:
        lab.publish(chain_definition("chain", ["a", "b", "c"], timeout=300))
        gate = tmp_path / "gate-b"
        items: list[dict[str, Any]] = [{"key": f"r{i}", "announce": ["b"], "gate": {"b": str(gate)}}
                                       for i in range(8)]
        ids = lab.engine.start_many("chain", items, run="redis-restart")
        key_of = {i.id: i.data["key"] for i in store_of(lab.engine).load_many(ids)}
        held: dict[str, tuple[int, int]] = {}

        def held_in_gate() -> bool:
            held.update(_held_in_gate(lab, key_of) or {})
            return bool(held)

        lab.wait_until(held_in_gate, HELD_BOUND, "two steps b started and inside their action")
        lab.redis.kill()
        gate.touch()  # the held b's return now, with Redis down: the write of each one's result fails
        failed = [Path(f"{gate}.{key_of[iid]}.write-failed") for iid in held]
        lab.wait_until(lambda: all(p.exists() for p in failed), WRITE_FAILED_BOUND,
                       lambda: f"the held steps b to return and fail to write their result; markers by the "
                               f"gate: {sorted(p.name for p in tmp_path.glob('gate-b.*'))}")
        lab.redis.start()
        back_at = time.monotonic()

        def moved() -> bool:
            now = {i.id: i for i in store_of(lab.engine).load_many(list(held))}
            return all(iid in now and (now[iid].status.is_terminal or now[iid].seq > seq)
                       for iid, (seq, _attempt) in held.items())

        # The bound is the feature under test: 300 s timeouts, the held steps must move on their own.
        lab.wait_until(moved, RECOVERY_BOUND, lambda: f"the steps started before the kill {held} to move again; "
                                                      f"{_histories(lab, held)}\n{lab.logs()}")
        recovered = time.monotonic() - back_at
        lab.wait_terminal(ids, timeout=120)
        figures = check_invariants(store_of(lab.engine), ids, "redis-restart")  # one transition per step
        calls = lab.calls()
        for iid, (seq, _attempt) in held.items():
            history = [a for a in store_of(lab.engine).activities(iid) if a["seq"] in (seq - 1, seq)]
            assert [a["outcome"] for a in history if a["seq"] == seq] == ["applied"], history
            key = lab.engine.get(iid).data["key"]
            assert calls[f"{key}:b"] in (1, 2), calls  # its result lost with the write, run once more at most
            # the delivery tried again by its process after Redis came back: a recorded no-op that resumes b
            assert any(a["outcome"] == "noop" and "resuming that step" in a.get("reason", "") for a in history), \
                history
        print(f"\nRedis kill -9 ({pool}): {len(held)} started steps moved again {recovered:.1f}s after Redis "
              f"came back (step timeout 300 s); {figures.line()}")
