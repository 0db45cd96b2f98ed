"""Turn one account's holdings, model and prices into the order-calculation request of ORDER_CALC.md.

The output is plain JSON data (``json.dumps`` works on it) with exactly the request's keys::

    as_of, account{id, region, type, tlh_enabled}, cash, lots[{lot_id, symbol, quantity,
    cost_basis, acquired_date}], prices, sleeves[{id, target_weight, securities}],
    identical_groups, trade_history[{date, account_id, symbol, side, quantity, realized_loss}],
    parameters

The checks here fail one account with a clear reason before any calculation runs: a closed
account (:class:`AccountClosed`), a model of another region (:class:`ModelMismatch`), and a
held symbol or a sleeve's primary without a price (:class:`MissingPrice`, naming the symbol).
An alternate without a price is simply left out of ``prices``: it is needed only if bought.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date
from typing import Any

from portfolio_manager.book import Holdings, ModelPortfolio
from portfolio_manager.errors import AccountClosed, MissingPrice, ModelMismatch


def _number(value: float) -> float | int:
    """Whole quantities as JSON integers (``170`` rather than ``170.0``)."""
    return int(value) if float(value).is_integer() else value


def _priced(prices: Mapping[str, float], symbol: str) -> bool:
    price = prices.get(symbol)
    return isinstance(price, int | float) and math.isfinite(price) and price > 0


def build_plan_request(
    holdings: Holdings,
    model: ModelPortfolio,
    prices: Mapping[str, float],
    as_of: date,
    parameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ORDER_CALC.md request for one account; raises AccountClosed, ModelMismatch or MissingPrice.

    ``prices`` may hold more symbols than needed; the request carries the held symbols and
    every sleeve security that has a price. ``parameters`` are passed through as given (the
    order calculation applies its defaults to keys left out).
    """
    account = holdings.account
    if not account.active:
        raise AccountClosed(account.id)
    if model.region is not account.region:
        raise ModelMismatch(
            f"account {account.id} is in {account.region.value} but model {model.id} is {model.region.value}"
        )
    held = list(holdings.positions())
    for symbol in held:
        if not _priced(prices, symbol):
            raise MissingPrice(symbol, account.id, "held")
    for sleeve in model.sleeves:
        if not _priced(prices, sleeve.primary):
            raise MissingPrice(sleeve.primary, account.id, f"primary of sleeve {sleeve.id}")
    wanted = [*held, *(s for s in model.securities if s not in held)]
    return {
        "as_of": as_of.isoformat(),
        "account": {
            "id": account.id,
            "region": account.region.value,
            "type": account.type.value,
            "tlh_enabled": account.tlh_enabled,
        },
        "cash": holdings.cash,
        "lots": [
            {
                "lot_id": lot.lot_id,
                "symbol": lot.symbol,
                "quantity": _number(lot.quantity),
                "cost_basis": lot.cost_basis,
                "acquired_date": lot.acquired_date.isoformat(),
            }
            for lot in holdings.lots
        ],
        "prices": {s: float(prices[s]) for s in wanted if _priced(prices, s)},
        "sleeves": [
            {"id": s.id, "target_weight": s.target_weight, "securities": list(s.securities)} for s in model.sleeves
        ],
        "identical_groups": [list(group) for group in model.identical_groups],
        "trade_history": [
            {
                "date": t.date.isoformat(),
                "account_id": t.account_id,
                "symbol": t.symbol,
                "side": t.side.value,
                "quantity": _number(t.quantity),
                "realized_loss": t.realized_loss,
            }
            for t in holdings.trade_history
        ],
        "parameters": dict(parameters or {}),
    }


__all__ = ["build_plan_request"]
