"""Tax-loss harvesting and restrictions (step 2): regions, account types, windows, replacements."""

from __future__ import annotations

import pytest

from order_calc import plan_orders
from order_calc.models import parse_request
from order_calc.tlh import harvest
from order_calc.valuation import Book

EQ = ("VTI", "ITOT", "SCHB")
PRICES = {"VTI": 200, "ITOT": 100, "SCHB": 50, "BND": 70}


def _us(req, *, eq_weight: float = 0.6, bnd_qty: float = 20, cash: float = 600, **kw) -> dict:
    """US TAXABLE, TLH on. VTI: L1 10 sh cost 2500 (250/sh, ST loss 500 = 20%), L2 5 sh cost 900 (gain, LT).

    VTI 3000 + BND 1400 + cash 600 = V 5000 with the defaults.
    """
    kw.setdefault("groups", [["VTI", "ITOT"]])
    return req.build(
        sleeves=[req.sleeve("EQ", eq_weight, *EQ), req.sleeve("BOND", round(1 - eq_weight, 10), "BND")],
        prices=PRICES,
        lots=[req.lot("L1", "VTI", 10, 2500, "2025-01-10"), req.lot("L2", "VTI", 5, 900, "2023-01-10"),
              req.lot("L3", "BND", bnd_qty, bnd_qty * 70, "2024-01-02")],
        cash=cash, region="US", account_type="TAXABLE", tlh=True, **kw,
    )


def _dump(request: dict) -> dict:
    return plan_orders(request).model_dump(mode="json")


def test_us_harvest_sells_only_loss_lots_and_buys_first_non_identical_replacement(req, brief) -> None:
    # Loss lots: L1 only (250 > 200): loss 2500 - 2000 = 500 >= 200, 20% >= 5%.
    # Replacement: ITOT is identical to VTI -> SCHB; 2000 / 50 = 40 shares.
    # After: EQ 1000 + 2000 = 3000 = T; BOND 1400 vs 2000 (12% drift) -> REBALANCE; BND 600/70 -> 8.
    p = _dump(_us(req))
    assert brief(p) == [
        ("SELL", "VTI", 10, "TLH", 2000.0),
        ("BUY", "SCHB", 40, "TLH", 2000.0),
        ("BUY", "BND", 8, "REBALANCE", 560.0),
    ]
    assert p["orders"][0]["lots"] == [{"lot_id": "L1", "quantity": 10, "realized_gain": -500.0, "term": "ST"}]
    assert "lots" not in p["orders"][1]
    assert p["restrictions"] == [{"symbol": "ITOT", "until": "2025-07-02"}, {"symbol": "VTI", "until": "2025-07-02"}]
    assert p["mode"] == "REBALANCE"
    assert p["cash_after"] == 40.0


def test_plan_with_only_tlh_orders_has_mode_none(req, brief) -> None:
    # BND 28 @ 70 = 1960, cash 40 -> V 5000; after the harvest no sleeve drifts and cash < 100.
    p = _dump(_us(req, bnd_qty=28, cash=40))
    assert p["mode"] == "NONE"
    assert [o["reason"] for o in p["orders"]] == ["TLH", "TLH"]
    assert p["cash_after"] == 40.0


def test_symbol_bought_in_this_plan_is_never_sold(req, brief) -> None:
    # EQ target 2000, after the harvest EQ = 3000: excess 1000. Sell order ITOT (none held),
    # SCHB (bought as replacement: skipped), VTI: 1000/200 = 5 -> the LT gain lot L2.
    # A = 600 + 1000 = 1600; BND deficit 3000 - 1400 = 1600 -> 22 (1540).
    p = _dump(_us(req, eq_weight=0.4))
    assert brief(p) == [
        ("SELL", "VTI", 10, "TLH", 2000.0),
        ("BUY", "SCHB", 40, "TLH", 2000.0),
        ("SELL", "VTI", 5, "REBALANCE", 1000.0),
        ("BUY", "BND", 22, "REBALANCE", 1540.0),
    ]
    assert p["orders"][2]["lots"] == [{"lot_id": "L2", "quantity": 5, "realized_gain": 100.0, "term": "LT"}]
    assert p["cash_after"] == 60.0


def test_without_identical_group_replacement_is_the_next_security(req, brief) -> None:
    p = _dump(_us(req, groups=[]))
    assert brief(p)[:2] == [("SELL", "VTI", 10, "TLH", 2000.0), ("BUY", "ITOT", 20, "TLH", 2000.0)]
    assert p["restrictions"] == [{"symbol": "VTI", "until": "2025-07-02"}]


@pytest.mark.parametrize(
    ("day", "blocked"),
    [("2025-05-03", True), ("2025-05-02", False), ("2025-06-02", True), ("2025-06-03", False)],
    ids=["day-30-included", "day-31-excluded", "as-of-included", "future-excluded"],
)
def test_wash_sale_window_both_ends_included(req, day: str, blocked: bool) -> None:
    # A buy of ITOT (identical to VTI) in the spouse's account.
    p = _dump(_us(req, history=[req.trade(day, "ITOT", "BUY", account="A1-SPOUSE")]))
    harvested = any(o["reason"] == "TLH" for o in p["orders"])
    assert harvested is not blocked
    assert p["diagnostics"] == (["TLH_BLOCKED_WASH_SALE VTI"] if blocked else [])


def test_wash_sale_counts_linked_accounts_and_the_symbol_itself(req) -> None:
    p = _dump(_us(req, history=[req.trade("2025-05-20", "VTI", "BUY", account="A1-RRSP-OF-SPOUSE")]))
    assert p["diagnostics"] == ["TLH_BLOCKED_WASH_SALE VTI"]
    assert not any(o["reason"] == "TLH" for o in p["orders"])


def test_history_sell_is_not_a_wash_sale_block(req) -> None:
    p = _dump(_us(req, history=[req.trade("2025-05-20", "VTI", "SELL")]))
    assert p["orders"][0]["reason"] == "TLH"


@pytest.mark.parametrize(
    ("day", "restricted", "listed"),
    [("2025-05-03", True, False), ("2025-05-02", False, False), ("2025-05-20", True, True)],
    ids=["day-30-restricts-until-as-of", "day-31-free", "inside"],
)
def test_loss_sale_in_history_restricts_replacement(req, day: str, restricted: bool, listed: bool) -> None:
    # SCHB sold at a loss: while restricted, VTI has no replacement (ITOT is identical).
    p = _dump(_us(req, history=[req.trade(day, "SCHB", "SELL", loss=True, account="A1-TFSA")]))
    if restricted:
        assert p["diagnostics"] == ["TLH_NO_REPLACEMENT VTI"]
        assert not any(o["reason"] == "TLH" for o in p["orders"])
    else:
        assert p["orders"][1]["symbol"] == "SCHB"
    schb = [r for r in p["restrictions"] if r["symbol"] == "SCHB"]
    assert schb == ([{"symbol": "SCHB", "until": "2025-06-19"}] if listed else [])


def test_sell_without_realized_loss_restricts_nothing(req) -> None:
    p = _dump(_us(req, history=[req.trade("2025-05-20", "SCHB", "SELL", loss=False)]))
    assert p["orders"][1]["symbol"] == "SCHB"
    assert all(r["symbol"] != "SCHB" for r in p["restrictions"])


def test_restrictions_apply_without_tlh_and_in_every_account_type(req, brief) -> None:
    # A TFSA, TLH off: a loss sale of XIC 5 days ago restricts XIC and its twin; buy the alternate.
    p = _dump(req.build(sleeves=[req.sleeve("EQ", 1.0, "XIC", "ZCN", "VCN")], prices={"XIC": 10, "ZCN": 20, "VCN": 40},
                        cash=1000, region="CA", account_type="TFSA", groups=[["XIC", "ZCN"]],
                        history=[req.trade("2025-05-28", "XIC", "SELL", loss=True)]))
    assert brief(p) == [("BUY", "VCN", 25, "REBALANCE", 1000.0)]
    assert p["restrictions"] == [{"symbol": "XIC", "until": "2025-06-27"}, {"symbol": "ZCN", "until": "2025-06-27"}]


def test_restrictions_sorted_by_symbol_then_date(req) -> None:
    p = _dump(req.build(sleeves=[req.sleeve("S", 1.0, "B", "A")], prices={"A": 1, "B": 1}, cash=0,
                        history=[req.trade("2025-05-30", "B", "SELL", loss=True),
                                 req.trade("2025-05-10", "A", "SELL", loss=True),
                                 req.trade("2025-05-20", "B", "SELL", loss=True)]))
    assert p["restrictions"] == [
        {"symbol": "A", "until": "2025-06-09"},
        {"symbol": "B", "until": "2025-06-19"},
        {"symbol": "B", "until": "2025-06-29"},
    ]


@pytest.mark.parametrize(
    ("region", "account_type"), [("US", "IRA"), ("US", "ROTH_IRA"), ("CA", "TFSA"), ("CA", "RRSP")]
)
def test_tlh_skipped_in_tax_sheltered_accounts(req, region: str, account_type: str) -> None:
    request = _us(req)
    request["account"].update(region=region, type=account_type)
    p = _dump(request)
    assert p["diagnostics"] == ["TLH_SKIPPED_ACCOUNT_TYPE"]
    assert not any(o["reason"] == "TLH" for o in p["orders"])
    assert all("lots" not in o for o in p["orders"])


def test_tlh_disabled_gives_no_diagnostic(req) -> None:
    request = _us(req)
    request["account"]["tlh_enabled"] = False
    p = _dump(request)
    assert p["diagnostics"] == []
    assert not any(o["reason"] == "TLH" for o in p["orders"])


@pytest.mark.parametrize(
    ("min_value", "min_pct", "harvested"),
    [(500, 0.20, True), (500.01, 0.20, False), (200, 0.2000001, False)],
    ids=["exactly-at-thresholds", "value-below", "pct-below"],
)
def test_thresholds_inclusive(req, min_value: float, min_pct: float, harvested: bool) -> None:
    p = _dump(_us(req, tlh_min_loss_value=min_value, tlh_min_loss_pct=min_pct))
    assert any(o["reason"] == "TLH" for o in p["orders"]) is harvested
    assert p["diagnostics"] == []


def test_us_default_thresholds_200(req) -> None:
    # Price 233.33: L1 loss 2500 - 10 * 233.33 = 166.7 < 200 -> no harvest; 216: loss 340 -> harvest.
    low = _us(req)
    low["prices"]["VTI"] = 233.33
    assert not any(o["reason"] == "TLH" for o in _dump(low)["orders"])
    high = _us(req)
    high["prices"]["VTI"] = 216
    assert _dump(high)["orders"][0]["reason"] == "TLH"


def _ca(req, vcn_price: float, **kw) -> dict:
    """CA NON_REGISTERED: VCN L1 100 sh cost 5000, L2 100 sh cost 3000 -> ACB 40/sh."""
    return req.build(
        sleeves=[req.sleeve("EQ", 0.6, "VCN", "XIC"), req.sleeve("BOND", 0.4, "ZAG")],
        prices={"VCN": vcn_price, "XIC": 33, "ZAG": 15},
        lots=[req.lot("L1", "VCN", 100, 5000, "2024-01-02"), req.lot("L2", "VCN", 100, 3000, "2025-03-03")],
        cash=100, region="CA", account_type="NON_REGISTERED", tlh=True, **kw,
    )


def test_ca_harvest_sells_whole_position_at_acb(req, brief) -> None:
    # ACB 40, price 35: loss (40 - 35) * 200 = 1000 >= 500, 1000 / 8000 = 12.5%. The whole
    # position goes (US rules would sell only L1). 7000 / 33 -> 212 XIC (6996), cash + 4.
    p = _dump(_ca(req, 35))
    assert brief(p)[:2] == [("SELL", "VCN", 200, "TLH", 7000.0), ("BUY", "XIC", 212, "TLH", 6996.0)]
    assert p["orders"][0]["lots"] == [{"lot_id": "ACB", "quantity": 200, "realized_gain": -1000.0}]
    assert p["restrictions"] == [{"symbol": "VCN", "until": "2025-07-02"}]


def test_ca_default_threshold_500(req) -> None:
    # Price 37.8: loss 2.2 * 200 = 440 (5.5%): enough in the US, not in Canada.
    p = _dump(_ca(req, 37.8))
    assert not any(o["reason"] == "TLH" for o in p["orders"])
    p = _dump(_ca(req, 37.8, tlh_min_loss_value=200))
    assert p["orders"][0]["reason"] == "TLH"


def test_ca_rebalance_sell_reports_acb_without_term(req) -> None:
    # No loss (price 45 > ACB 40): EQ 9000 of V 9100 vs T 5460 -> sell; one ACB entry, gain 5/sh.
    p = _dump(_ca(req, 45))
    sell = p["orders"][0]
    assert (sell["side"], sell["symbol"], sell["reason"]) == ("SELL", "VCN", "REBALANCE")
    q = sell["quantity"]
    assert sell["lots"] == [{"lot_id": "ACB", "quantity": q, "realized_gain": round(q * 5.0, 2)}]


def test_no_replacement_diagnostic(req) -> None:
    # EQ = [VTI, ITOT], identical: no replacement at all.
    request = _us(req)
    request["sleeves"][0]["securities"] = ["VTI", "ITOT"]
    p = _dump(request)
    assert p["diagnostics"] == ["TLH_NO_REPLACEMENT VTI"]


def test_replacement_buy_below_min_trade_value_skips_harvest(req) -> None:
    p = _dump(_us(req, min_trade_value=2000.01))
    # BND's 600 of deficit cannot reach the minimum either.
    assert p["diagnostics"] == ["TLH_SKIPPED_MIN_VALUE VTI", "TRADE_SUPPRESSED_MIN_VALUE BND"]
    assert not any(o["reason"] == "TLH" for o in p["orders"])


def test_replacement_priced_above_proceeds_skips_harvest(req) -> None:
    request = _us(req, min_trade_value=0)
    request["prices"]["SCHB"] = 2500  # proceeds 2000 buy 0 shares
    p = _dump(request)
    assert p["diagnostics"] == ["TLH_SKIPPED_MIN_VALUE VTI"]


def test_alternate_without_price_needed_only_when_bought(req) -> None:
    from order_calc import InvalidRequest

    request = _us(req)
    del request["prices"]["SCHB"]
    with pytest.raises(InvalidRequest, match=r"^prices\.SCHB: "):
        plan_orders(request)
    request["account"]["tlh_enabled"] = False  # SCHB is never bought now
    assert plan_orders(request).mode == "REBALANCE"


def _three(req, groups=()) -> dict:
    """Sleeve [A, B, C] at 100: A and C held at a loss (cost 150), B not held."""
    return req.build(
        sleeves=[req.sleeve("S", 1.0, "A", "B", "C")], prices={"A": 100, "B": 100, "C": 100},
        lots=[req.lot("LA", "A", 10, 1500, "2025-01-02"), req.lot("LC", "C", 10, 1500, "2025-01-02")],
        region="US", account_type="TAXABLE", tlh=True, groups=groups,
    )


def test_replacement_skips_symbols_harvested_earlier_and_buys_merge(req, brief) -> None:
    # A harvested -> B. C harvested -> A is restricted now, B is fine -> B again: one TLH buy of 20.
    p = _dump(_three(req))
    assert brief(p) == [("SELL", "A", 10, "TLH", 1000.0), ("SELL", "C", 10, "TLH", 1000.0),
                        ("BUY", "B", 20, "TLH", 2000.0)]


def test_replacement_is_not_itself_harvested(req, brief) -> None:
    # Sleeve [A, B]: both at a loss. A harvested -> B bought; B is then not harvested.
    request = _three(req)
    request["sleeves"][0]["securities"] = ["A", "B"]
    request["lots"][1]["symbol"] = "B"
    request["prices"].pop("C")
    p = _dump(request)
    assert brief(p) == [("SELL", "A", 10, "TLH", 1000.0), ("BUY", "B", 10, "TLH", 1000.0)]
    assert p["diagnostics"] == []


def test_identical_to_a_replacement_bought_in_this_plan_is_blocked(req) -> None:
    # B and C identical: A -> B bought today, so harvesting C would be a wash sale.
    p = _dump(_three(req, groups=[["B", "C"]]))
    assert p["diagnostics"] == ["TLH_BLOCKED_WASH_SALE C"]
    assert [o["symbol"] for o in p["orders"] if o["reason"] == "TLH"] == ["A", "B"]


def test_replacement_creates_new_lot_on_as_of(req) -> None:
    request = parse_request(_us(req))
    book = Book.from_request(request)
    out = harvest(book, request.trade_history, True)
    assert [o.symbol for o in out.sells] == ["VTI"]
    new = book.lots["SCHB"]
    assert [(x.lot_id, x.quantity, x.cost, x.acquired.isoformat()) for x in new] == [
        ("NEW-SCHB", 40, 2000, "2025-06-02")
    ]
    assert [(x.lot_id, x.quantity) for x in book.lots["VTI"]] == [("L2", 5)]
    assert book.cash == 600


def test_fractional_replacement_truncated(req) -> None:
    request = _us(req, fractional=True)
    request["prices"]["SCHB"] = 30  # 2000 / 30 = 66.6666.. -> 66.6666
    plan = plan_orders(request)
    assert (plan.orders[1].symbol, plan.orders[1].quantity) == ("SCHB", 66.6666)
