"""Scenario 5b: Redis restarted again and again under a running morning, prefork fleets.

Before the fix, a prefork node that held unacknowledged messages when Redis went away died
with ``Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")``
(kombu gives the unacked messages back through a transport already detached from its
connection; see ``engine/broker/kombu_fix.py``). Pass criteria: every worker node's main process is
the one started before the first restart (none exited), the logs hold no ``Unrecoverable
error``, and every instance finishes with one transition per step.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.ops.fleet import FleetSpec
from engine.testing import store_of
from tests.faults.harness import FaultLab, chain_definition, fault_lab
from tests.faults.invariants import check_invariants

RESTARTS = 6
#: Fewer instances in flight than the node has children: one child is idle, so the node's
#: consumer has a BRPOP outstanding when Redis dies (the crash needs one) and holds 3 unacked.
COUNT = 3
NODES = [f"n{i}" for i in range(12)]


def _transitions(lab: FaultLab, ids: list[str]) -> int:
    pipe = lab.client.pipeline(transaction=False)
    for iid in ids:
        pipe.hget(store_of(lab.engine).keys.instance(iid), "seq")
    return sum(int(s or 1) - 1 for s in pipe.execute())


@pytest.mark.slow
def test_prefork_nodes_survive_repeated_redis_restarts_under_load(tmp_path: Path) -> None:
    nodes = {"engine": FleetSpec("engine", "threads", 2), "faults": FleetSpec("faults", "prefork", 4)}
    with fault_lab(tmp_path, nodes=nodes) as lab:
        lab.publish(chain_definition("chain", NODES, timeout=5, max_attempts=3))
        ids = lab.engine.start_many("chain", [{"key": f"k{i}", "sleep": dict.fromkeys(NODES, 1.0)}
                                              for i in range(COUNT)], run="restarts")
        pids = {name: lab.node_pid(name) for name in nodes}
        restarted_at = []
        for n in range(RESTARTS):
            # Restart only while prefork children hold unacked messages (the crash's window).
            target = (n + 1) * COUNT * len(NODES) // (RESTARTS + 2)
            lab.wait_until(lambda target=target: _transitions(lab, ids) >= target, 180,  # type: ignore[misc]
                           f"progress before restart {n + 1}")
            lab.redis.kill()
            time.sleep(1.0)
            lab.redis.start()
            restarted_at.append(time.monotonic())
        lab.wait_terminal(ids, timeout=300)
        exited = {name: fleet.procs[0].returncode for name, fleet in lab.nodes.items()
                  if fleet.procs[0].poll() is not None}
        assert not exited, f"worker nodes exited: {exited}\n{lab.logs()}"
        assert {name: lab.node_pid(name) for name in nodes} == pids
        assert "Unrecoverable error" not in lab.log_text(), lab.logs()
        figures = check_invariants(store_of(lab.engine), ids, "restarts")
        print(f"\nscenario 5b ({RESTARTS} Redis kill -9 + restart, 1 s down each, prefork x4): "
              f"no node exited; {figures.line()}; all done {time.monotonic() - restarted_at[-1]:.1f}s "
              f"after the last restart")
