"""MILP solver (step 5): better than greedy where it can be, checked, greedy as the fallback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from order_calc import milp as milp_module
from order_calc import plan_orders
from order_calc.greedy import solve_greedy
from order_calc.models import parse_request
from order_calc.solution import Solution, deviation, violations
from order_calc.tlh import apply_history_restrictions
from order_calc.valuation import Book, decide_mode


@pytest.fixture
def spec(spec_request: dict) -> dict:
    """The specification's example request, solved by the MILP."""
    spec_request["parameters"]["solver"] = "milp"
    return spec_request


def _greedy(data: dict) -> dict:
    return {**data, "parameters": {**data["parameters"], "solver": "greedy"}}


def _book(data: dict) -> tuple[Book, str]:
    request = parse_request(data)
    book = Book.from_request(request)
    apply_history_restrictions(book, request.trade_history)
    return book, decide_mode(book)


def test_milp_beats_greedy_on_the_spec_example(spec) -> None:
    # Greedy: 66 VCN sold, 229 ZAG bought: |4919.2 - 4896.3| + |3240.35 - 3264.2| = 46.75.
    # MILP: 67 VCN sold, 231 ZAG bought: |4871.9 - 4896.3| + |3268.65 - 3264.2| = 28.85.
    plan = plan_orders(spec)
    assert plan.solver_used == "milp"
    assert [(o.side, o.symbol, o.quantity) for o in plan.orders] == [("SELL", "VCN", 67), ("BUY", "ZAG", 231)]
    assert plan.model_dump(mode="json")["cash_after"] == 19.95
    book, mode = _book(spec)
    assert deviation(book, solve_greedy(book, mode)) == pytest.approx(46.75)
    assert deviation(book, milp_module.solve_milp(book, mode)) == pytest.approx(28.85)


def test_milp_is_the_default_solver(spec) -> None:
    del spec["parameters"]["solver"]
    assert plan_orders(spec).solver_used == "milp"


def test_falls_back_to_greedy_when_solver_returns_nothing(spec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(milp_module, "milp", lambda *a, **k: SimpleNamespace(x=None, status=2))
    plan = plan_orders(spec)
    assert plan.solver_used == "greedy"
    assert plan.model_dump(mode="json") == plan_orders(_greedy(spec)).model_dump(mode="json")


def test_falls_back_to_greedy_when_solution_breaks_a_constraint(spec, monkeypatch: pytest.MonkeyPatch) -> None:
    # An "optimal" answer that buys far more than the cash allows.
    monkeypatch.setattr(milp_module, "_solve", lambda book, mode: Solution("milp", buys={"ZAG": 10_000}))
    assert plan_orders(spec).solver_used == "greedy"


def test_falls_back_to_greedy_when_its_deviation_is_worse(spec, monkeypatch: pytest.MonkeyPatch) -> None:
    # Doing nothing is sound but leaves the drift: greedy wins.
    monkeypatch.setattr(milp_module, "_solve", lambda book, mode: Solution("milp"))
    plan = plan_orders(spec)
    assert plan.solver_used == "greedy"
    assert [o.quantity for o in plan.orders] == [66, 229]


def test_solver_exception_falls_back(spec, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **k):
        raise ValueError("bad model")

    monkeypatch.setattr(milp_module, "milp", boom)
    assert plan_orders(spec).solver_used == "greedy"


def test_mode_none_runs_no_solver(req) -> None:
    plan = plan_orders(req.build(sleeves=[req.sleeve("X", 1.0, "X")], prices={"X": 5},
                                 lots=[req.lot("1", "X", 10, 50)], solver="milp"))
    assert (plan.mode, plan.orders, plan.solver_used) == ("NONE", [], None)


def test_milp_respects_min_trade_value_and_restrictions(req) -> None:
    # Y restricted (loss sale 3 days ago): its sleeve buys Y2. Min trade 300 on small positions.
    request = req.build(
        sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y", "Y2")], prices={"X": 7, "Y": 11, "Y2": 13},
        lots=[req.lot("1", "X", 150, 1050)], cash=200, solver="milp", min_trade_value=300,
        history=[req.trade("2025-05-30", "Y", "SELL", loss=True)],
    )
    plan = plan_orders(request)
    assert plan.solver_used == "milp"
    assert {o.symbol for o in plan.orders if o.side == "BUY"} == {"Y2"}
    assert all(o.est_value >= 300 for o in plan.orders)
    assert plan.cash_after >= 0


def test_milp_fractional(req) -> None:
    request = req.build(sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y")], prices={"X": 3, "Y": 7},
                        cash=1000, fractional=True, solver="milp")
    plan = plan_orders(request)
    for o in plan.orders:
        assert round(o.quantity * 10_000) == pytest.approx(o.quantity * 10_000, abs=1e-6)
    assert 0 <= plan.cash_after < 0.001 + 1e-9
    greedy = plan_orders({**request, "parameters": {**request["parameters"], "solver": "greedy"}})
    assert plan.cash_after <= greedy.cash_after + 1e-9


def test_violations_names_each_broken_rule(req) -> None:
    data = req.build(sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y", "Y2")],
                     prices={"X": 10, "Y": 10, "Y2": 10}, lots=[req.lot("1", "X", 100, 1000)], cash=50,
                     history=[req.trade("2025-05-30", "Y", "SELL", loss=True)])
    book, mode = _book(data)
    assert mode == "REBALANCE"
    assert violations(book, mode, Solution("milp", sells={"X": 50}, buys={"Y2": 50})) == []
    broken = {
        "over the holding": Solution("milp", sells={"X": 101}),
        "restricted": Solution("milp", buys={"Y": 10}),
        "< min_trade_value": Solution("milp", sells={"X": 5}),
        "bad quantity": Solution("milp", sells={"X": 10.5}),
        "cash after": Solution("milp", buys={"Y2": 20}),
        "also bought": Solution("milp", sells={"X": 10}, buys={"X": 10}),
    }
    for words, sol in broken.items():
        assert any(words in v for v in violations(book, mode, sol)), words
    assert any("CASH_INVEST" in v for v in violations(book, "CASH_INVEST", Solution("milp", sells={"X": 20})))


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1e5), st.floats(0.01, 1e3), st.integers(0, 2000))
def test_rounding_cut_is_valid_at_every_integer(gap: float, price: float, q: int) -> None:
    # The cut d >= r + (p - 2r)(q - f) never excludes the true deviation |gap - p q|.
    row = milp_module._rounding_cut(gap, price, 0, 1, 2)[0]
    lhs = row[0] * q + row[1] * abs(gap - price * q)  # (p - 2r) q - d
    assert lhs <= milp_module._rounding_cut_rhs(gap, price) + 1e-6 * max(1.0, gap, price * q)
