"""Mode decision (step 3): drift bands, cash to invest, NONE."""

from __future__ import annotations

import pytest

from order_calc import plan_orders


def _mode(req, x: float, y: float, cash: float = 0.0, **params) -> str:
    request = req.build(sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y")], prices={"X": 1, "Y": 1},
                        lots=[req.lot("1", "X", x, x), req.lot("2", "Y", y, y)], cash=cash, **params)
    return plan_orders(request).mode


@pytest.mark.parametrize(("x", "y", "mode"), [(550, 450, "NONE"), (551, 449, "REBALANCE"), (449, 551, "REBALANCE")])
def test_abs_band_is_strict(req, x: float, y: float, mode: str) -> None:
    # V = 1000, T = 500: drift 50 / 1000 = 0.05 is not above the band; 0.051 is.
    assert _mode(req, x, y) == mode


@pytest.mark.parametrize(
    ("x", "y", "rel", "mode"),
    [(560, 440, 0.1, "REBALANCE"), (540, 460, 0.1, "NONE"), (550, 450, 0.1, "NONE"), (560, 440, None, "NONE")],
)
def test_rel_band(req, x: float, y: float, rel: float | None, mode: str) -> None:
    # abs band 0.5 never fires; rel 0.1 of T 500 = 50: 60 > 50 rebalances, 50 does not.
    assert _mode(req, x, y, drift_band_abs=0.5, drift_band_rel=rel) == mode


def test_rel_band_on_zero_target(req) -> None:
    request = req.build(sleeves=[req.sleeve("X", 0.0, "X"), req.sleeve("Y", 1.0, "Y")], prices={"X": 1, "Y": 1},
                        lots=[req.lot("1", "X", 1, 1), req.lot("2", "Y", 999, 999)], drift_band_rel=0.5)
    assert plan_orders(request).mode == "REBALANCE"


@pytest.mark.parametrize(("cash", "mode"), [(100, "CASH_INVEST"), (99.99, "NONE")])
def test_cash_invest_at_min_trade_value(req, cash: float, mode: str) -> None:
    # X 500, Y 500, cash 100: V 1100, drift 50 / 1100 < 5%.
    assert _mode(req, 500, 500, cash) == mode


@pytest.mark.parametrize(("cash", "mode"), [(220, "CASH_INVEST"), (210, "NONE")])
def test_cash_invest_net_of_reserve(req, cash: float, mode: str) -> None:
    # X 450, Y 450 and a 10% reserve: 220 - 112 = 108 >= 100; 210 - 111 = 99 < 100.
    assert _mode(req, 450, 450, cash, cash_reserve_pct=0.1) == mode


def test_empty_account_is_none(req) -> None:
    plan = plan_orders(req.build(sleeves=[req.sleeve("X", 1.0, "X")], prices={"X": 5}))
    assert (plan.mode, plan.orders, plan.cash_after) == ("NONE", [], 0.0)


def test_cash_invest_buys_only(req) -> None:
    # V = 2040, T = 1020: X over by 20 (within the band) is never sold; Y gets its 100 of deficit.
    request = req.build(sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y")], prices={"X": 1, "Y": 1},
                        lots=[req.lot("1", "X", 1000, 1000), req.lot("2", "Y", 920, 920)], cash=120)
    for solver in ("greedy", "milp"):
        request["parameters"]["solver"] = solver
        plan = plan_orders(request)
        assert plan.mode == "CASH_INVEST"
        assert [(o.side, o.symbol, o.quantity, o.reason) for o in plan.orders] == [("BUY", "Y", 100, "CASH_INVEST")]
