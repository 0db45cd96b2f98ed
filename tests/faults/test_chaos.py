"""Scenario 10: the chaos soak, short variant (``make chaos`` runs the long one), on a fleet per service and
on the layout ``tradeflow workers`` starts (combined ``solo`` processes and the filler).

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


@pytest.mark.slow
def test_a_short_chaos_soak_on_the_default_layout_keeps_every_invariant(tmp_path: Path) -> None:
    """The same on combined solo processes: steps started by their delivery (no kombu unacked entry) and run
    straight from it, while their processes are killed, frozen and Redis restarted."""
    summary = soak(Settings(seed=12, duration=20.0, accounts=300, step_timeout=8.0, deadline=150.0,
                            layout="default"), tmp_path)
    print("\n" + render(summary))
    assert summary.passed and sum(summary.faults.values()) >= 3 and not summary.faults["kill_child"]
    assert summary.accepted_orders == summary.approved_orders > 0
    assert summary.submissions == {"filled": sum(summary.submissions.values())}
