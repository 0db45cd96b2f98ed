"""The plan is a function of the request alone: the same on a quiet and on a busy machine.

The MILP is bounded by work (a branch-and-bound node limit, one thread), never by the wall
clock. ``data/hard_request.json`` is a generated account whose MILP needs about 4,800
branch-and-bound nodes (about 0.3 s on a quiet core, several seconds with every core busy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from order_calc import defaults, plan_orders
from order_calc import milp as milp_module
from tests.load import busy_cores

HARD = json.loads((Path(__file__).parent / "data" / "hard_request.json").read_text())


def _plan(request: dict[str, Any]) -> str:
    return plan_orders(request).model_dump_json()


def _spy_solver(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every result scipy's milp returns (status, node count)."""
    results: list[Any] = []
    real = milp_module.milp

    def spy(*args: Any, **kwargs: Any) -> Any:
        res = real(*args, **kwargs)
        results.append(res)
        return res

    monkeypatch.setattr(milp_module, "milp", spy)
    return results


def test_a_hard_request_gives_the_same_plan_on_a_busy_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    results = _spy_solver(monkeypatch)
    quiet = _plan(HARD)
    assert results[-1].status == 0 and results[-1].mip_node_count > 1000  # it does branch
    with busy_cores():
        loaded = [_plan(HARD) for _ in range(2)]
    assert loaded == [quiet, quiet]


def test_a_request_that_hits_the_work_bound_gives_the_same_fallback_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(defaults, "MILP_NODE_LIMIT", 200)
    results = _spy_solver(monkeypatch)
    first = _plan(HARD)
    stopped = results[-1]  # HiGHS reports the node limit as "Solution limit reached" (scipy: status 4)
    assert stopped.mip_node_count == 200 and "limit reached" in stopped.message and stopped.x is not None
    again = [_plan(HARD) for _ in range(2)]
    with busy_cores():
        again.append(_plan(HARD))
    assert again == [first] * 3
    assert json.loads(first)["orders"]  # the incumbent (or greedy) plan, not an empty one
