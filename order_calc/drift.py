"""Drift after the trades: how far the account would sit from its target mix once a plan's orders fill.

``drift_after(request, orders)`` is the largest ``|value_k - T_k| / V`` over the sleeves after the
orders (at their estimated values), with ``V`` and ``T_k`` as in step 1 of ORDER_CALC.md (holdings
at the request's prices plus cash; targets net of the cash reserve). Plain arithmetic on the
request's JSON form: the order calculation's action reports it beside each plan, and run diffs
compare it between versions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def drift_after(request: Mapping[str, Any], orders: Iterable[Mapping[str, Any]]) -> float:
    """The largest sleeve drift, as a fraction of the account's value, after ``orders`` fill (0.0: no value)."""
    prices: Mapping[str, float] = request.get("prices") or {}
    sleeves = list(request.get("sleeves") or [])
    where = {symbol: k for k, sleeve in enumerate(sleeves) for symbol in sleeve.get("securities") or []}
    values = [0.0] * len(sleeves)
    held = 0.0
    for lot in request.get("lots") or []:
        value = float(lot["quantity"]) * float(prices.get(lot["symbol"]) or 0.0)
        held += value
        if lot["symbol"] in where:
            values[where[lot["symbol"]]] += value
    total = held + float(request.get("cash") or 0.0)
    if total <= 0 or not sleeves:
        return 0.0
    reserve = float((request.get("parameters") or {}).get("cash_reserve_pct") or 0.0)
    for order in orders:
        k = where.get(order["symbol"])
        if k is not None:
            values[k] += float(order["est_value"]) * (1 if order["side"] == "BUY" else -1)
    return max(abs(v - float(s["target_weight"]) * total * (1.0 - reserve)) / total
               for v, s in zip(values, sleeves, strict=True))


__all__ = ["drift_after"]
