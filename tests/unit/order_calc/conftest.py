"""Builders for order_calc requests: small, readable, hand-checkable accounts."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import pytest

AS_OF = "2025-06-02"

#: The request of ORDER_CALC.md, verbatim (solver greedy).
SPEC_REQUEST = {
    "as_of": "2025-06-02",
    "account": {"id": "A1", "region": "CA", "type": "RRSP", "tlh_enabled": False},
    "cash": 119.50,
    "lots": [{"lot_id": "L1", "symbol": "VCN", "quantity": 170, "cost_basis": 8041.00, "acquired_date": "2024-01-02"}],
    "prices": {"VCN": 47.30, "ZAG": 14.15},
    "sleeves": [{"id": "EQ", "target_weight": 0.6, "securities": ["VCN", "XIC"]},
                {"id": "BOND", "target_weight": 0.4, "securities": ["ZAG"]}],
    "identical_groups": [["VTI", "ITOT"]],
    "trade_history": [{"date": "2025-05-15", "account_id": "A1-SPOUSE", "symbol": "VCN", "side": "BUY",
                       "quantity": 2, "realized_loss": False}],
    "parameters": {"drift_band_abs": 0.05, "drift_band_rel": None, "min_trade_value": 100, "cash_reserve_pct": 0.0,
                   "fractional": False, "tlh_min_loss_pct": 0.05, "tlh_min_loss_value": 200, "lot_method": "TAX_MIN",
                   "wash_days": 30, "solver": "greedy"},
}



class Req:
    """Builders of plain-dict requests (the JSON form), with the contract's field names."""

    AS_OF = AS_OF

    @staticmethod
    def lot(lot_id: str, symbol: str, quantity: float, cost_basis: float, acquired: str = "2020-01-02") -> dict:
        """One lot; ``cost_basis`` is the lot's total cost."""
        return {"lot_id": lot_id, "symbol": symbol, "quantity": quantity, "cost_basis": cost_basis,
                "acquired_date": acquired}

    @staticmethod
    def trade(day: str, symbol: str, side: str, *, loss: bool = False, account: str = "A1") -> dict:
        """One entry of ``trade_history``."""
        return {"date": day, "account_id": account, "symbol": symbol, "side": side, "quantity": 1,
                "realized_loss": loss}

    @staticmethod
    def sleeve(sleeve_id: str, weight: float, *securities: str) -> dict:
        """One sleeve: primary first, then alternates."""
        return {"id": sleeve_id, "target_weight": weight, "securities": list(securities)}

    @staticmethod
    def build(
        *,
        sleeves: list[dict],
        prices: dict[str, float],
        lots: Iterable[dict] = (),
        cash: float = 0.0,
        region: str = "US",
        account_type: str = "IRA",
        tlh: bool = False,
        groups: Iterable[Iterable[str]] = (),
        history: Iterable[dict] = (),
        as_of: str = AS_OF,
        **parameters: Any,
    ) -> dict:
        """A whole request; keyword arguments beyond the named ones go to ``parameters``."""
        parameters.setdefault("solver", "greedy")
        return {
            "as_of": as_of,
            "account": {"id": "A1", "region": region, "type": account_type, "tlh_enabled": tlh},
            "cash": cash,
            "lots": list(lots),
            "prices": dict(prices),
            "sleeves": sleeves,
            "identical_groups": [list(g) for g in groups],
            "trade_history": list(history),
            "parameters": parameters,
        }


@pytest.fixture(scope="session")
def req() -> type[Req]:
    """The request builders."""
    return Req


def orders_of(plan_json: dict) -> list[tuple]:
    """(side, symbol, quantity, reason, est_value) of every order, for compact assertions."""
    return [(o["side"], o["symbol"], o["quantity"], o["reason"], o["est_value"]) for o in plan_json["orders"]]


@pytest.fixture(scope="session")
def brief() -> Any:
    """``orders_of`` as a fixture."""
    return orders_of


@pytest.fixture
def spec_request() -> dict:
    """A fresh copy of the specification's example request."""
    return copy.deepcopy(SPEC_REQUEST)
