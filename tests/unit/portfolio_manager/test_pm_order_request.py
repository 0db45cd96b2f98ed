"""build_plan_request: the exact request of ORDER_CALC.md, and clear failures for broken accounts."""

from __future__ import annotations

import json

import pytest

from portfolio_manager.book import Holdings
from portfolio_manager.errors import AccountClosed, MissingPrice, ModelMismatch
from portfolio_manager.order_request import build_plan_request
from portfolio_manager.redis_book import RedisBook
from tests.unit.portfolio_manager import data

PARAMS = {"drift_band_abs": 0.05, "tlh_min_loss_value": 500, "solver": "greedy"}


@pytest.fixture
def holdings(fake_book: RedisBook) -> Holdings:
    data.populate(fake_book)
    return fake_book.get_holdings("A1", data.AS_OF, 30)


def prices(**extra: float) -> dict[str, float]:
    return {"VCN": 47.30, "ZAG": 14.15, "ZCN": 30.10, "UNRELATED": 1.0} | extra


def test_request_is_exactly_the_contract(holdings: Holdings) -> None:
    request = build_plan_request(holdings, data.MODELS[0], prices(), data.AS_OF, PARAMS)
    assert request == {
        "as_of": "2025-06-02",
        "account": {"id": "A1", "region": "CA", "type": "NON_REGISTERED", "tlh_enabled": True},
        "cash": 119.5,
        "lots": [
            {"lot_id": "L1", "symbol": "VCN", "quantity": 170, "cost_basis": 8041.0, "acquired_date": "2024-01-02"},
            {"lot_id": "L2", "symbol": "ZAG", "quantity": 300, "cost_basis": 4500.0, "acquired_date": "2023-05-01"},
        ],
        # held symbols first, then the sleeves' other securities that have a price (XIC, XBB have none)
        "prices": {"VCN": 47.30, "ZAG": 14.15, "ZCN": 30.10},
        "sleeves": [
            {"id": "EQ", "target_weight": 0.6, "securities": ["VCN", "ZCN", "XIC"]},
            {"id": "BOND", "target_weight": 0.4, "securities": ["ZAG", "XBB"]},
        ],
        "identical_groups": [["VCN", "XIC"]],
        "trade_history": [
            {
                "date": "2025-05-03",
                "account_id": "A1",
                "symbol": "VCN",
                "side": "BUY",
                "quantity": 2,
                "realized_loss": False,
            },
            {
                "date": "2025-05-15",
                "account_id": "A2",
                "symbol": "XIC",
                "side": "BUY",
                "quantity": 2,
                "realized_loss": False,
            },
            {
                "date": "2025-06-02",
                "account_id": "A1",
                "symbol": "ZAG",
                "side": "SELL",
                "quantity": 2,
                "realized_loss": True,
            },
        ],
        "parameters": PARAMS,
    }
    assert json.loads(json.dumps(request)) == request  # plain JSON data
    assert request["parameters"] is not PARAMS  # a copy: the caller's dict is not shared


def test_priced_alternates_are_included(holdings: Holdings) -> None:
    request = build_plan_request(holdings, data.MODELS[0], prices(XIC=35.0, XBB=29.0), data.AS_OF, None)
    assert list(request["prices"]) == ["VCN", "ZAG", "ZCN", "XIC", "XBB"]
    assert request["parameters"] == {}


def test_missing_price_of_a_held_symbol_names_it(holdings: Holdings) -> None:
    without = {k: v for k, v in prices().items() if k != "ZAG"}
    with pytest.raises(MissingPrice, match=r"no price for 'ZAG' for account 'A1' \(held\)") as info:
        build_plan_request(holdings, data.MODELS[0], without, data.AS_OF, PARAMS)
    assert info.value.symbol == "ZAG" and info.value.account_id == "A1"


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_a_non_positive_or_non_finite_price_counts_as_missing(holdings: Holdings, bad: float) -> None:
    with pytest.raises(MissingPrice, match="'VCN'"):
        build_plan_request(holdings, data.MODELS[0], prices(VCN=bad), data.AS_OF, PARAMS)


def test_missing_price_of_a_sleeve_primary_names_it(holdings: Holdings) -> None:
    no_lots = holdings.model_copy(update={"lots": ()})
    with pytest.raises(MissingPrice, match=r"'VCN'.*primary of sleeve EQ"):
        build_plan_request(no_lots, data.MODELS[0], {"ZAG": 14.15}, data.AS_OF, PARAMS)


def test_closed_account_fails(fake_book: RedisBook) -> None:
    data.populate(fake_book)
    closed = fake_book.get_holdings("C1", data.AS_OF, 30)
    with pytest.raises(AccountClosed, match="'C1' is closed"):
        build_plan_request(closed, data.MODELS[1], {"VTI": 250.0}, data.AS_OF, PARAMS)


def test_model_of_another_region_fails(holdings: Holdings) -> None:
    with pytest.raises(ModelMismatch, match="A1 is in CA but model US-M is US"):
        build_plan_request(holdings, data.MODELS[1], prices(VTI=250.0), data.AS_OF, PARAMS)


def test_fractional_quantities_stay_fractional(holdings: Holdings) -> None:
    lot = holdings.lots[0].model_copy(update={"quantity": 12.3456})
    request = build_plan_request(
        holdings.model_copy(update={"lots": (lot,)}), data.MODELS[0], prices(), data.AS_OF, PARAMS
    )
    assert request["lots"][0]["quantity"] == 12.3456


def test_order_calc_accepts_the_request(holdings: Holdings) -> None:
    models = pytest.importorskip("order_calc.models")
    request = build_plan_request(holdings, data.MODELS[0], prices(), data.AS_OF, PARAMS)
    parsed = models.parse_request(request)
    assert parsed.account.id == "A1"
