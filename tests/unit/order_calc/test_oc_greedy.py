"""Greedy solver (step 4): hand-computed plans for each rule."""

from __future__ import annotations

from order_calc import plan_orders


def _plan(req, **kw) -> dict:
    return plan_orders(req.build(**kw)).model_dump(mode="json")


def test_sell_rounds_half_down(req, brief) -> None:
    # V = 1200 + 500 + 200 = 1900, T = 950 each; AAA excess 250 / 100 = 2.5 -> 2 (halves down).
    # A = 200 + 200 = 400; BBB deficit 450: min(floor(9.0), floor(8.0)) = 8.
    p = _plan(req, sleeves=[req.sleeve("A", 0.5, "AAA"), req.sleeve("B", 0.5, "BBB")],
              prices={"AAA": 100, "BBB": 50}, lots=[req.lot("1", "AAA", 12, 1000), req.lot("2", "BBB", 10, 400)],
              cash=200)
    assert p["mode"] == "REBALANCE"
    assert brief(p) == [("SELL", "AAA", 2, "REBALANCE", 200.0), ("BUY", "BBB", 8, "REBALANCE", 400.0)]
    assert p["cash_after"] == 0.0


def test_sell_rounds_just_over_half_up_and_pass_2_buys_one_more(req, brief) -> None:
    # V = 1898, T = 949; AAA excess 251 / 100 = 2.51 -> 3 (300). A = 198 + 300 = 498.
    # Pass 1: BBB min(floor(449/50)=8, floor(498/50)=9) = 8 -> A 98, d 49.
    # Pass 2: d 49 > 25 and 50 <= 98 -> one more share; A 48, d -1: stop.
    p = _plan(req, sleeves=[req.sleeve("A", 0.5, "AAA"), req.sleeve("B", 0.5, "BBB")],
              prices={"AAA": 100, "BBB": 50}, lots=[req.lot("1", "AAA", 12, 1000), req.lot("2", "BBB", 10, 400)],
              cash=198)
    assert brief(p) == [("SELL", "AAA", 3, "REBALANCE", 300.0), ("BUY", "BBB", 9, "REBALANCE", 450.0)]
    assert p["cash_after"] == 48.0


def _alternates_first(req, min_trade: float) -> dict:
    # EQ = [P 10, A1 20, A2 25]: holdings A1 2 (40), A2 20 (500), P 46 (460) = 1000; BOND B 6 @ 100 = 600.
    # V = 1600, T = 800: EQ excess 200 is sold A1, A2, then P.
    return _plan(req, sleeves=[req.sleeve("EQ", 0.5, "P", "A1", "A2"), req.sleeve("BOND", 0.5, "B")],
                 prices={"P": 10, "A1": 20, "A2": 25, "B": 100},
                 lots=[req.lot("1", "A1", 2, 40), req.lot("2", "A2", 20, 500), req.lot("3", "P", 46, 460),
                       req.lot("4", "B", 6, 600)],
                 min_trade_value=min_trade)


def test_alternates_sold_before_primary_and_small_sells_dropped_without_passing_excess(req, brief) -> None:
    # A1: round(200/20)=10, at most the holding 2 -> 40 < 100: dropped, but the 40 of excess is
    # not passed on: A2 gets 160 -> round(6.4) = 6 (150). P gets 10 -> 1 share (10): dropped.
    # Buys: A = 150, B deficit 200 -> min(2, 1) = 1; pass 2: 100 > 50 but 100 > A 50.
    p = _alternates_first(req, 100)
    assert brief(p) == [("SELL", "A2", 6, "REBALANCE", 150.0), ("BUY", "B", 1, "REBALANCE", 100.0)]
    assert p["diagnostics"] == ["TRADE_SUPPRESSED_MIN_VALUE A1", "TRADE_SUPPRESSED_MIN_VALUE P"]
    assert p["cash_after"] == 50.0


def test_sells_listed_in_security_order_when_all_pass(req, brief) -> None:
    # Same account, min trade 10: A1 2 (40), A2 6 (150), P 1 (10); A = 200 -> B 2.
    p = _alternates_first(req, 10)
    assert brief(p) == [
        ("SELL", "P", 1, "REBALANCE", 10.0),
        ("SELL", "A1", 2, "REBALANCE", 40.0),
        ("SELL", "A2", 6, "REBALANCE", 150.0),
        ("BUY", "B", 2, "REBALANCE", 200.0),
    ]
    assert p["diagnostics"] == []


def test_pass_1_largest_deficit_first(req, brief) -> None:
    # Z 5 @ 60 = 300, X 1 @ 100, Y 0; cash 600; V = 1000; T = 200 / 400 / 400.
    # Z excess 100 -> round(1.67) = 2 (120) < 150: suppressed. A = 600.
    # Deficits X 300, Y 400: Y first, min(4, 6) = 4 -> A 200; X min(3, 2) = 2.
    p = _plan(req, sleeves=[req.sleeve("Z", 0.2, "Z"), req.sleeve("X", 0.4, "X"), req.sleeve("Y", 0.4, "Y")],
              prices={"Z": 60, "X": 100, "Y": 100}, lots=[req.lot("1", "Z", 5, 300), req.lot("2", "X", 1, 100)],
              cash=600, min_trade_value=150)
    assert brief(p) == [("BUY", "X", 2, "REBALANCE", 200.0), ("BUY", "Y", 4, "REBALANCE", 400.0)]
    assert p["diagnostics"] == ["TRADE_SUPPRESSED_MIN_VALUE Z"]
    assert p["cash_after"] == 0.0


def test_pass_1_then_pass_2_largest_remaining_deficit(req, brief) -> None:
    # All cash 1000; T = 200 / 300 / 500; prices 30 / 70 / 90.
    # Pass 1 (Z, Y, X): Z 5 (450) A 550; Y 4 (280) A 270; X 6 (180) A 90.
    # Remaining d: X 20, Y 20, Z 50. Pass 2: Z (50 > 45, 90 <= 90) -> A 0; then nothing fits.
    p = _plan(req, sleeves=[req.sleeve("X", 0.2, "X"), req.sleeve("Y", 0.3, "Y"), req.sleeve("Z", 0.5, "Z")],
              prices={"X": 30, "Y": 70, "Z": 90}, cash=1000)
    assert brief(p) == [
        ("BUY", "X", 6, "REBALANCE", 180.0),
        ("BUY", "Y", 4, "REBALANCE", 280.0),
        ("BUY", "Z", 6, "REBALANCE", 540.0),
    ]
    assert p["cash_after"] == 0.0


def test_pass_2_tie_goes_to_sleeve_order(req, brief) -> None:
    # Cash 150, T = 75 each, price 100: pass 1 buys nothing; pass 2 tie (75, 75) -> X.
    p = _plan(req, sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y")],
              prices={"X": 100, "Y": 100}, cash=150)
    assert brief(p) == [("BUY", "X", 1, "REBALANCE", 100.0)]
    assert p["cash_after"] == 50.0


def test_small_buys_dropped_cash_stays_cash(req, brief) -> None:
    # X 100 @ 50, Y 99 @ 50, cash 150: V = 10100, T = 5050, drift < 5% -> CASH_INVEST.
    # Pass 1: Y (d 100) 2 -> A 50; X (d 50) 1 -> A 0. X's 50 < 100: dropped, no re-allocation.
    p = _plan(req, sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y")],
              prices={"X": 50, "Y": 50}, lots=[req.lot("1", "X", 100, 5000), req.lot("2", "Y", 99, 4950)],
              cash=150)
    assert p["mode"] == "CASH_INVEST"
    assert brief(p) == [("BUY", "Y", 2, "CASH_INVEST", 100.0)]
    assert p["diagnostics"] == ["TRADE_SUPPRESSED_MIN_VALUE X"]
    assert p["cash_after"] == 50.0


def test_cash_reserve_lowers_targets_and_available_cash(req, brief) -> None:
    # V = 1000, reserve 10%: T = 450 each, A = 900 -> 45 shares each, 100 stays.
    p = _plan(req, sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y")],
              prices={"X": 10, "Y": 10}, cash=1000, cash_reserve_pct=0.1)
    assert brief(p) == [("BUY", "X", 45, "REBALANCE", 450.0), ("BUY", "Y", 45, "REBALANCE", 450.0)]
    assert p["cash_after"] == 100.0


def test_cash_reserve_not_funded_by_sells_beyond_excess(req, brief) -> None:
    # Cash 0 under a 10% reserve: V = 2000, T = 900 each. X excess 300 -> 30 sold (300);
    # A = 0 + 300 - 200 = 100 -> Y deficit 100 -> 10 shares (100). cash_after 200 = the reserve.
    p = _plan(req, sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y")],
              prices={"X": 10, "Y": 10}, lots=[req.lot("1", "X", 120, 1200), req.lot("2", "Y", 80, 800)],
              cash_reserve_pct=0.1)
    assert brief(p) == [("SELL", "X", 30, "REBALANCE", 300.0), ("BUY", "Y", 10, "REBALANCE", 100.0)]
    assert p["cash_after"] == 200.0


def test_fractional_buys_truncate_to_4_decimals(req) -> None:
    # T = 500 each; X: 500/3 = 166.66666 -> 166.6666 (rounding would give .6667);
    # A = 500.0002; Y: min(trunc(71.428571), trunc(71.42860)) = 71.4285.
    plan = plan_orders(req.build(sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y")],
                                 prices={"X": 3, "Y": 7}, cash=1000, fractional=True))
    assert [(o.symbol, o.quantity) for o in plan.orders] == [("X", 166.6666), ("Y", 71.4285)]
    assert abs(plan.cash_after - (1000 - 166.6666 * 3 - 71.4285 * 7)) < 1e-9
    assert plan.model_dump(mode="json")["orders"][0]["est_value"] == 500.0  # 499.9998 in cents


def test_fractional_sells_truncate(req) -> None:
    # X 100 @ 3, cash 1: V = 301, T = 150.5; excess 149.5 / 3 = 49.8333.. -> 49.8333.
    # A = 1 + 149.4999 = 150.4999; Y: min(trunc(21.5), trunc(21.49998)) = 21.4999.
    plan = plan_orders(req.build(sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y")],
                                 prices={"X": 3, "Y": 7}, lots=[req.lot("1", "X", 100, 300)], cash=1,
                                 fractional=True, min_trade_value=10))
    assert [(o.side, o.symbol, o.quantity) for o in plan.orders] == [("SELL", "X", 49.8333), ("BUY", "Y", 21.4999)]


def test_sleeve_buys_first_unrestricted_security(req, brief) -> None:
    # VTI sold at a loss 10 days ago: VTI and its twin ITOT are restricted -> the sleeve buys SCHB.
    p = _plan(req, sleeves=[req.sleeve("EQ", 1.0, "VTI", "ITOT", "SCHB")],
              prices={"VTI": 200, "ITOT": 100, "SCHB": 50}, cash=1000, groups=[["VTI", "ITOT"]],
              history=[req.trade("2025-05-23", "VTI", "SELL", loss=True)])
    assert brief(p) == [("BUY", "SCHB", 20, "REBALANCE", 1000.0)]
    assert p["restrictions"] == [{"symbol": "ITOT", "until": "2025-06-22"}, {"symbol": "VTI", "until": "2025-06-22"}]


def test_no_orders_in_mode_none(req) -> None:
    p = _plan(req, sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y")],
              prices={"X": 10, "Y": 10}, lots=[req.lot("1", "X", 50, 500), req.lot("2", "Y", 50, 500)], cash=99)
    assert p == {"mode": "NONE", "orders": [], "restrictions": [], "diagnostics": [], "cash_after": 99.0}
