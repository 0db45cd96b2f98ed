"""The choices made where ORDER_CALC.md is silent (each one documented in docs/order-calc.md)."""

from __future__ import annotations

from order_calc import plan_orders
from order_calc.numeric import affordable


def _dump(request: dict) -> dict:
    return plan_orders(request).model_dump(mode="json")


def test_holdings_outside_every_sleeve_count_in_v_but_are_never_traded(req, brief) -> None:
    # OLD (500) is in no sleeve: V = 500 + 500 + 1000 = 2000, T = 1000 each. Deficits X 500,
    # Y 1000: Y first takes all the cash (100 shares); OLD is not sold to fund X.
    p = _dump(req.build(sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y")],
                        prices={"X": 10, "Y": 10, "OLD": 5},
                        lots=[req.lot("1", "OLD", 100, 300), req.lot("2", "X", 50, 500)], cash=1000))
    assert brief(p) == [("BUY", "Y", 100, "REBALANCE", 1000.0)]
    assert p["cash_after"] == 0.0


def test_us_harvest_reports_loss_lots_in_request_order(req) -> None:
    # Two loss lots listed newest first: the TLH sell reports them in that order.
    p = _dump(req.build(sleeves=[req.sleeve("S", 1.0, "A", "B")], prices={"A": 100, "B": 100},
                        lots=[req.lot("NEW", "A", 5, 600, "2025-05-01"), req.lot("OLD", "A", 5, 550, "2022-01-03"),
                              req.lot("GAIN", "A", 5, 400, "2022-01-03")],
                        region="US", account_type="TAXABLE", tlh=True, tlh_min_loss_value=100))
    assert p["orders"][0]["lots"] == [
        {"lot_id": "NEW", "quantity": 5, "realized_gain": -100.0, "term": "ST"},
        {"lot_id": "OLD", "quantity": 5, "realized_gain": -50.0, "term": "LT"},
    ]


def test_a_sleeve_never_buys_back_a_security_it_sold(req, brief) -> None:
    # P restricted -> the sleeve would buy A1. Sells: A1 1 (3), excess 451 -> A2 round(4.51) = 5
    # (500), 49 under target. Buying 16 A1 would close it, but A1 was just sold: no buy.
    # B: 549 deficit, A = 95 + 503 = 598 -> 10, then pass 2 one more (49 > 25, 50 <= 98).
    p = _dump(req.build(sleeves=[req.sleeve("S", 0.5, "P", "A1", "A2"), req.sleeve("B", 0.5, "B")],
                        prices={"P": 20, "A1": 3, "A2": 100, "B": 50},
                        lots=[req.lot("1", "A1", 1, 3), req.lot("2", "A2", 10, 1000)], cash=95,
                        history=[req.trade("2025-05-25", "P", "SELL", loss=True)], min_trade_value=0))
    assert brief(p) == [
        ("SELL", "A1", 1, "REBALANCE", 3.0),
        ("SELL", "A2", 5, "REBALANCE", 500.0),
        ("BUY", "B", 11, "REBALANCE", 550.0),
    ]
    assert p["cash_after"] == 48.0


def test_affordable_absorbs_float_noise_but_never_overspends() -> None:
    assert affordable(99.05, 14.15, False) == 7  # 99.05 / 14.15 is 7 in decimal arithmetic
    assert affordable(0.7, 0.1, False) == 7
    assert affordable(99.04, 14.15, False) == 6
    assert affordable(-5, 10, False) == 0
    assert affordable(20077.9257, 1.0, True) == 20077.9257
    for cash, price in [(123.45, 0.07), (1e6 + 0.01, 3.33), (0.3, 0.1), (20077.92569, 1.0)]:
        for fractional in (False, True):
            assert affordable(cash, price, fractional) * price <= cash + 1e-9


def test_fractional_pass_1_leaves_nothing_for_pass_2(req) -> None:
    # Fractional pass 1 buys 1.5 shares with the 450; nothing is left for pass 2.
    plan = plan_orders(req.build(sleeves=[req.sleeve("X", 1.0, "X")], prices={"X": 300}, cash=450,
                                 fractional=True))
    assert [(o.symbol, o.quantity) for o in plan.orders] == [("X", 1.5)]
