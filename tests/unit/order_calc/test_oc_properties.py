"""Property-based tests over random accounts, for both solvers."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from order_calc import Plan, plan_orders
from order_calc.defaults import ACCOUNT_TYPES

AS_OF = date(2025, 6, 2)
SYMBOLS = [f"S{i:02d}" for i in range(18)]


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A random but valid request: 1-6 sleeves of 1-3 securities, up to 10 lots, some history."""
    region = draw(st.sampled_from(["US", "CA"]))
    account_type = draw(st.sampled_from(ACCOUNT_TYPES[region]))
    fractional = draw(st.booleans())
    pool = draw(st.permutations(SYMBOLS))
    sleeves, used = [], 0
    raw_weights = draw(st.lists(st.integers(0, 10), min_size=1, max_size=6))
    if sum(raw_weights) == 0:
        raw_weights[0] = 1
    for k, w in enumerate(raw_weights):
        size = draw(st.integers(1, 3))
        secs = list(pool[used : used + size])
        used += size
        sleeves.append({"id": f"K{k}", "target_weight": w / sum(raw_weights), "securities": secs})
    universe = list(pool[:used])
    prices = {s: draw(st.floats(1, 400).map(lambda x: round(x, 2))) for s in universe}
    lots = []
    for i in range(draw(st.integers(0, 10))):
        sym = draw(st.sampled_from(universe))
        qty = draw(st.floats(0.5, 300).map(lambda x: round(x, 4))) if fractional else draw(st.integers(1, 300))
        factor = draw(st.floats(0.4, 1.6))
        age = draw(st.integers(0, 1200))
        cost = round(qty * prices[sym] * factor, 2)
        lots.append({"lot_id": f"L{i}", "symbol": sym, "quantity": qty, "cost_basis": cost,
                     "acquired_date": (AS_OF - timedelta(days=age)).isoformat()})
    history = [
        {"date": (AS_OF - timedelta(days=draw(st.integers(-3, 45)))).isoformat(), "account_id": "LINKED",
         "symbol": draw(st.sampled_from(universe)), "side": draw(st.sampled_from(["BUY", "SELL"])),
         "quantity": 1, "realized_loss": draw(st.booleans())}
        for _ in range(draw(st.integers(0, 4)))
    ]
    groups = [draw(st.lists(st.sampled_from(universe), min_size=2, max_size=3, unique=True))
              for _ in range(draw(st.integers(0, 2) if len(universe) > 1 else st.just(0)))]
    parameters = {
        "drift_band_abs": draw(st.sampled_from([0.0, 0.01, 0.05])),
        "drift_band_rel": draw(st.sampled_from([None, 0.1])),
        "min_trade_value": draw(st.sampled_from([0, 50, 100, 500])),
        "cash_reserve_pct": draw(st.sampled_from([0.0, 0.02, 0.1])),
        "fractional": fractional,
        "tlh_min_loss_pct": draw(st.sampled_from([0.0, 0.05])),
        "tlh_min_loss_value": draw(st.sampled_from([0, 200])),
        "lot_method": draw(st.sampled_from(["TAX_MIN", "HIFO", "FIFO"])),
        "wash_days": draw(st.sampled_from([0, 10, 30])),
    }
    return {
        "as_of": AS_OF.isoformat(),
        "account": {"id": "A", "region": region, "type": account_type, "tlh_enabled": draw(st.booleans())},
        "cash": draw(st.sampled_from([0.0, 50.0, 1000.0, 25_000.0]))
        + draw(st.floats(0, 100).map(lambda x: round(x, 2))),
        "lots": lots,
        "prices": prices,
        "sleeves": sleeves,
        "identical_groups": groups,
        "trade_history": history,
        "parameters": parameters,
    }


def _restricted(request: dict, plan: Plan) -> set[str]:
    """Symbols the plan may not buy, computed from the rules, independently of the code."""
    wash = request["parameters"]["wash_days"]
    groups = request["identical_groups"]

    def with_group(sym: str) -> set[str]:
        out = {sym}
        for g in groups:
            if sym in g:
                out.update(g)
        return out

    out: set[str] = set()
    for t in request["trade_history"]:
        day = date.fromisoformat(t["date"])
        if t["side"] == "SELL" and t["realized_loss"] and AS_OF - timedelta(days=wash) <= day <= AS_OF:
            out |= with_group(t["symbol"])
    for o in plan.orders:
        if o.reason == "TLH" and o.side == "SELL":
            out |= with_group(o.symbol)
    return out


def _holdings(request: dict) -> dict[str, float]:
    held: dict[str, float] = {}
    for lot in request["lots"]:
        held[lot["symbol"]] = held.get(lot["symbol"], 0.0) + lot["quantity"]
    return held


def _deviation(request: dict, plan: Plan) -> float:
    """Σ |value_k - T_k| after all the plan's orders."""
    prices = request["prices"]
    held = _holdings(request)
    total = sum(q * prices[s] for s, q in held.items()) + request["cash"]
    for o in plan.orders:
        held[o.symbol] = held.get(o.symbol, 0.0) + (o.quantity if o.side == "BUY" else -o.quantity)
    reserve = request["parameters"]["cash_reserve_pct"]
    dev = 0.0
    for sleeve in request["sleeves"]:
        value = sum(held.get(s, 0.0) * prices[s] for s in sleeve["securities"])
        dev += abs(value - sleeve["target_weight"] * total * (1 - reserve))
    return dev


def _check_invariants(request: dict, plan: Plan) -> None:
    params = request["parameters"]
    assert plan.cash_after >= -1e-9
    flows = sum(o.est_value if o.side == "SELL" else -o.est_value for o in plan.orders)
    assert abs(plan.cash_after - (request["cash"] + flows)) < 1e-6
    for o in plan.orders:
        assert o.quantity > 0
        assert o.est_value >= params["min_trade_value"] * (1 - 1e-9), o
        if not params["fractional"]:
            assert o.quantity == int(o.quantity), o
        else:
            assert abs(o.quantity * 10_000 - round(o.quantity * 10_000)) < 1e-6, o
    bought = {o.symbol for o in plan.orders if o.side == "BUY"}
    sold = {o.symbol for o in plan.orders if o.side == "SELL"}
    assert not bought & sold
    assert not bought & _restricted(request, plan)
    held = _holdings(request)
    for sym in sold:
        total = sum(o.quantity for o in plan.orders if o.side == "SELL" and o.symbol == sym)
        assert total <= held.get(sym, 0.0) + 1e-9
    if plan.mode == "CASH_INVEST":
        assert all(o.side == "BUY" or o.reason == "TLH" for o in plan.orders)
    if plan.mode == "NONE":
        assert all(o.reason == "TLH" for o in plan.orders)
    taxable = request["account"]["type"] in ("TAXABLE", "NON_REGISTERED")
    for o in plan.orders:
        assert (o.lots is not None) == (taxable and o.side == "SELL")
        if o.lots is not None:
            assert abs(sum(x.quantity for x in o.lots) - o.quantity) < 1e-9


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_both_solvers_keep_every_invariant_and_milp_is_never_worse(request: dict) -> None:
    request["parameters"]["solver"] = "greedy"
    greedy = plan_orders(request)
    _check_invariants(request, greedy)
    request["parameters"]["solver"] = "milp"
    milp = plan_orders(request)
    _check_invariants(request, milp)
    assert milp.mode == greedy.mode
    g, m = _deviation(request, greedy), _deviation(request, milp)
    assert m <= g * (1 + 1e-6) + 1e-6
    if milp.solver_used == "greedy":  # a fallback gives exactly the greedy plan
        assert milp.model_dump(mode="json") == greedy.model_dump(mode="json")


@settings(max_examples=60, deadline=None)
@given(requests())
def test_plan_json_shape(request: dict) -> None:
    dumped = plan_orders(request).model_dump(mode="json")
    assert list(dumped) == ["mode", "orders", "restrictions", "diagnostics", "cash_after"]
    keys = [(r["symbol"], r["until"]) for r in dumped["restrictions"]]
    assert keys == sorted(set(keys))
    assert all(until > AS_OF.isoformat() for _, until in keys)
    order_rank = {("SELL", "TLH"): 0, ("BUY", "TLH"): 1}
    ranks = [order_rank.get((o["side"], o["reason"]), 2 if o["side"] == "SELL" else 3) for o in dumped["orders"]]
    assert ranks == sorted(ranks)
    for o in dumped["orders"]:
        assert o["est_value"] == round(o["est_value"], 2)
        for lot in o.get("lots", []):
            assert ("term" in lot) == (request["account"]["region"] == "US")
