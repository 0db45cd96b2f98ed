"""Request validation (errors name the field), defaults, and the exact plan JSON."""

from __future__ import annotations

import json
from datetime import date

import pytest

from order_calc import InvalidRequest, OrderCalcError, Plan, PlanRequest, plan_orders
from order_calc.models import LotFill, Order, parse_request
from order_calc.numeric import cents, out_quantity, round_half_down, truncate4


def _error(data: dict, mutate) -> InvalidRequest:
    mutate(data)
    with pytest.raises(InvalidRequest) as info:
        plan_orders(data)
    return info.value


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda d: d["lots"][0].update(quantity=0), "lots[0].quantity", "must be > 0"),
        (lambda d: d["lots"][0].update(quantity=-3), "lots[0].quantity", "must be > 0"),
        (lambda d: d["lots"][0].update(cost_basis=-0.01), "lots[0].cost_basis", "must be >= 0"),
        (lambda d: d.update(cash=-1), "cash", "must be >= 0"),
        (lambda d: d["sleeves"][1].update(target_weight=1.2), "sleeves[1].target_weight", "[0, 1]"),
        (lambda d: d["sleeves"][1].update(target_weight=-0.1), "sleeves[1].target_weight", "[0, 1]"),
        (lambda d: d["sleeves"][1].update(target_weight=0.39), "sleeves", "sum to 1"),
        (lambda d: d["prices"].pop("VCN"), "prices.VCN", "first security"),
        (lambda d: d["lots"].append({**d["lots"][0], "lot_id": "L2", "symbol": "XIC"}), "prices.XIC", "held symbol"),
        (lambda d: d["prices"].update(VCN=0), "prices.VCN", "missing price"),
        (lambda d: d["prices"].pop("ZAG"), "prices.ZAG", "first security"),
        (lambda d: d["account"].update(region="EU"), "account.region", "unknown region"),
        (lambda d: d["account"].update(type="CHEQUING"), "account.type", "unknown account type"),
        (lambda d: d["account"].update(type="TAXABLE"), "account.type", "for region CA"),
        (lambda d: d["parameters"].update(lot_method="LIFO"), "parameters.lot_method", "unknown lot_method"),
        (lambda d: d["parameters"].update(solver="cplex"), "parameters.solver", "unknown solver"),
        (lambda d: d.update(as_of="2025-02-30"), "as_of", "not a date"),
        (lambda d: d["lots"][0].update(acquired_date="02/01/2024"), "lots[0].acquired_date", "not a date"),
        (lambda d: d["trade_history"][0].update(date="yesterday"), "trade_history[0].date", "not a date"),
        (lambda d: d["trade_history"][0].update(side="SHORT"), "trade_history[0].side", "unknown side"),
        (lambda d: d["parameters"].update(solvr="milp"), "parameters.solvr", "did you mean 'solver'"),
        (lambda d: d["lots"].append(dict(d["lots"][0])), "lots[1].lot_id", "duplicate"),
        (lambda d: d["sleeves"][1]["securities"].append("VCN"), "sleeves[1].securities[1]", "already in"),
        (lambda d: d.pop("sleeves"), "sleeves", "missing"),
        (lambda d: d["lots"][0].update(quantity="nan"), "lots[0].quantity", "finite"),
    ],
)
def test_invalid_input_names_the_field(spec_request, mutate, field: str, words: str) -> None:
    err = _error(spec_request, mutate)
    assert err.field == field
    assert str(err).startswith(f"{field}: ")
    assert words in str(err)
    assert "\n" not in str(err)
    assert isinstance(err, OrderCalcError)


def test_all_problems_are_collected(spec_request) -> None:
    err = _error(spec_request, lambda d: (d["lots"][0].update(quantity=0), d.update(cash=-5)))
    assert [p.field for p in err.problems] == ["cash", "lots[0].quantity"]
    assert str(err).endswith("(and 1 more problem)")


def test_non_object_request() -> None:
    with pytest.raises(InvalidRequest, match="JSON object"):
        plan_orders([1, 2])  # type: ignore[arg-type]


def test_weights_sum_tolerance(spec_request) -> None:
    data = spec_request
    data["sleeves"][1]["target_weight"] = 0.4 + 9e-7
    assert parse_request(data).sleeves[1].target_weight == pytest.approx(0.4, abs=1e-6)
    data["sleeves"][1]["target_weight"] = 0.4 + 2e-6
    with pytest.raises(InvalidRequest, match=r"^sleeves: target weights sum to"):
        parse_request(data)


def test_unpriced_alternate_is_fine_until_bought(spec_request) -> None:
    # XIC (an alternate of EQ) has no price: valid, since it is never bought here.
    assert "XIC" not in spec_request["prices"]
    assert plan_orders(spec_request).mode == "REBALANCE"


def test_defaults_fill_in(spec_request) -> None:
    data = spec_request
    data.pop("parameters")
    data.pop("trade_history")
    data.pop("identical_groups")
    params = parse_request(data).parameters
    assert params.model_dump() == {
        "drift_band_abs": 0.05, "drift_band_rel": None, "min_trade_value": 100.0, "cash_reserve_pct": 0.0,
        "fractional": False, "tlh_min_loss_pct": 0.05, "tlh_min_loss_value": 500.0, "lot_method": "TAX_MIN",
        "wash_days": 30, "solver": "milp",
    }
    data["account"]["region"], data["account"]["type"] = "US", "IRA"
    assert parse_request(data).parameters.tlh_min_loss_value == 200.0


def test_null_parameters_take_defaults(spec_request) -> None:
    data = spec_request
    data["parameters"] = {"min_trade_value": None, "tlh_min_loss_value": None, "drift_band_rel": None}
    params = parse_request(data).parameters
    assert (params.min_trade_value, params.tlh_min_loss_value, params.drift_band_rel) == (100.0, 500.0, None)


def test_null_optional_sections_mean_left_out(spec_request) -> None:
    for key in ("lots", "identical_groups", "trade_history", "parameters"):
        spec_request[key] = None
    request = parse_request(spec_request)
    assert (request.lots, request.trade_history, request.parameters.solver) == ([], [], "milp")


def test_model_and_dict_give_the_same_plan(spec_request) -> None:
    model = PlanRequest.model_validate(spec_request)
    assert plan_orders(model) == plan_orders(spec_request)


def test_spec_request_plan_exact_json(spec_request) -> None:
    # V = 170 * 47.30 + 119.50 = 8160.50; T_EQ = 4896.30, T_BOND = 3264.20.
    # EQ excess 3144.70 / 47.30 = 66.48 -> 66 VCN (3121.80). A = 119.50 + 3121.80 = 3241.30;
    # BOND: min(floor(230.69), floor(229.07)) = 229 ZAG (3240.35); pass 2: 14.15 > A 0.95.
    plan = plan_orders(spec_request)
    assert plan.model_dump(mode="json") == {
        "mode": "REBALANCE",
        "orders": [
            {"side": "SELL", "symbol": "VCN", "quantity": 66, "reason": "REBALANCE", "est_value": 3121.8},
            {"side": "BUY", "symbol": "ZAG", "quantity": 229, "reason": "REBALANCE", "est_value": 3240.35},
        ],
        "restrictions": [],
        "diagnostics": [],
        "cash_after": 0.95,
    }
    text = json.dumps(plan.model_dump(mode="json"))
    assert '"quantity": 66,' in text  # whole shares are JSON integers


def test_money_rounded_only_in_output() -> None:
    order = Order(side="BUY", symbol="X", quantity=3, reason="REBALANCE", est_value=3 * 33.335)
    assert order.est_value == pytest.approx(100.005)
    assert order.model_dump(mode="json")["est_value"] == 100.01
    plan = Plan(mode="NONE", orders=[], restrictions=[], diagnostics=[], cash_after=0.004999)
    assert plan.model_dump(mode="json")["cash_after"] == 0.0
    assert plan.cash_after == 0.004999


def test_lot_fill_drops_null_term_and_plan_hides_solver() -> None:
    assert LotFill(lot_id="ACB", quantity=2.5, realized_gain=-1.234).model_dump(mode="json") == {
        "lot_id": "ACB", "quantity": 2.5, "realized_gain": -1.23}
    plan = Plan(mode="NONE", orders=[], restrictions=[], diagnostics=[], cash_after=1, solver_used="milp")
    assert "solver_used" not in plan.model_dump(mode="json")


def test_restriction_date_serialised_iso() -> None:
    from order_calc.models import Restriction

    assert Restriction(symbol="X", until=date(2025, 7, 2)).model_dump(mode="json") == {"symbol": "X",
                                                                                       "until": "2025-07-02"}


@pytest.mark.parametrize(
    ("x", "expected"), [(2.5, 2), (2.51, 3), (2.49, 2), (3.0, 3), (0.5, 0), (2.5000000000000004, 2)]
)
def test_round_half_down(x: float, expected: int) -> None:
    assert round_half_down(x) == expected


@pytest.mark.parametrize(("x", "expected"), [(1.23459, 1.2345), (166.66666666, 166.6666), (0.7 / 0.1, 7.0), (2.0, 2.0)])
def test_truncate4(x: float, expected: float) -> None:
    assert truncate4(x) == expected


@pytest.mark.parametrize(
    ("x", "expected"), [(2.675, 2.68), (1.005, 1.01), (-2.675, -2.68), (-0.004, 0.0), (3121.8, 3121.8)]
)
def test_cents_half_away_from_zero(x: float, expected: float) -> None:
    assert cents(x) == expected
    assert str(cents(x)) != "-0.0"


def test_out_quantity() -> None:
    assert out_quantity(66.0) == 66
    assert isinstance(out_quantity(66.0), int)
    assert out_quantity(1.23450000001) == 1.2345
