"""Scenario 10: the chaos soak, short variant (``make chaos`` runs the long one).

On the layout ``tradeflow workers`` starts (combined ``solo`` processes and the filler):
``CHAOS_LAYOUT=default make chaos-short`` (not in this suite yet: with it, the Sentinel scenario's
old primary did not rejoin as a replica in two whole runs out of two, and did in the two runs
without it; the cause is not found).

Pass criterion (asserted by ``tests.faults.chaos.soak``): with workers killed, pool children
killed, Redis killed and restarted on its AOF and nodes frozen at random, every instance of
the morning run and of its submissions ends terminal with one applied transition per step,
the run counters match the instances, only the book's broken accounts fail, and the
brokerage holds exactly one order per approved order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.chaos import Settings, render, soak


@pytest.mark.slow
def test_a_short_chaos_soak_keeps_every_invariant(tmp_path: Path) -> None:
    summary = soak(Settings(seed=11, duration=20.0, accounts=300, step_timeout=8.0, deadline=150.0), tmp_path)
    print("\n" + render(summary))
    assert summary.passed and sum(summary.faults.values()) >= 3
    assert summary.accepted_orders == summary.approved_orders > 0
    assert summary.submissions == {"filled": sum(summary.submissions.values())}  # every approved order accepted
