"""Step 4, the greedy solver: the reference plan for rebalancing and investing cash."""

from __future__ import annotations

import numpy as np

from order_calc.numeric import affordable, quantity_down, round_half_down, truncate4
from order_calc.solution import Solution
from order_calc.valuation import Book


def _sells(book: Book, values: np.ndarray, sol: Solution) -> float:
    """Sell the excess of every overweight sleeve; return the proceeds.

    Alternates go first, in list order, then the primary; the excess left after one
    security passes on to the next. q = round(excess / price), halves down (fractional:
    truncated to 4 decimals), at most the holding. A symbol bought earlier in this plan is
    never sold. A sell worth less than min_trade_value is dropped and its excess is not
    passed on.
    """
    params = book.params
    proceeds = 0.0
    for sleeve in book.sleeves:
        excess = float(values[sleeve.index] - book.targets[sleeve.index])
        if excess <= 0:
            continue
        for sym in (*sleeve.securities[1:], sleeve.securities[0]):
            if excess <= 0:
                break
            held = book.holding(sym)
            if held <= 0 or sym in book.bought:
                continue
            price = book.prices[sym]
            raw = excess / price
            q = min(truncate4(raw) if params.fractional else float(round_half_down(raw)), held)
            if q <= 0:
                continue
            excess -= q * price
            if q * price < params.min_trade_value:
                sol.diagnostics.append(f"TRADE_SUPPRESSED_MIN_VALUE {sym}")
                continue
            sol.sells[sym] = q
            proceeds += q * price
            values[sleeve.index] -= q * price
    return proceeds


def _buys(book: Book, values: np.ndarray, available: float, sol: Solution) -> None:
    """Pass 1 by largest deficit, pass 2 one share at a time, then drop the small buys.

    A sleeve buys its first security that is not restricted; a sleeve whose buy security
    was sold in this plan does not buy (no symbol is both bought and sold).
    """
    params = book.params
    deficits: dict[int, float] = {}
    security: dict[int, str] = {}
    sold = book.sold | sol.sells.keys()
    for sleeve in book.sleeves:
        d = float(book.targets[sleeve.index] - values[sleeve.index])
        sym = book.buy_security(sleeve.index)
        if d > 0 and sym is not None and sym not in sold:
            deficits[sleeve.index], security[sleeve.index] = d, sym
    if available <= 0 or not deficits:
        return
    price = {k: book.price(sym) for k, sym in security.items()}
    bought: dict[int, float] = dict.fromkeys(deficits, 0.0)
    for k in sorted(deficits, key=lambda k: (-deficits[k], k)):  # pass 1
        p = price[k]
        n = max(0.0, min(quantity_down(deficits[k] / p, params.fractional),
                         affordable(available, p, params.fractional)))
        bought[k] += n
        available -= n * p
        deficits[k] -= n * p
    while True:  # pass 2
        eligible = [k for k in deficits if deficits[k] > price[k] / 2 and price[k] <= available]
        if not eligible:
            break
        k = min(eligible, key=lambda k: (-deficits[k], k))
        bought[k] += 1
        available -= price[k]
        deficits[k] -= price[k]
    for k in sorted(bought):
        q = bought[k]
        if q <= 0:
            continue
        if q * price[k] < params.min_trade_value:
            sol.diagnostics.append(f"TRADE_SUPPRESSED_MIN_VALUE {security[k]}")
            continue
        sol.buys[security[k]] = q


def solve_greedy(book: Book, mode: str) -> Solution:
    """The greedy plan for ``mode`` on the post-harvest ``book`` (the book is not changed)."""
    sol = Solution(solver="greedy")
    if mode == "NONE":
        return sol
    values = book.sleeve_values()
    proceeds = _sells(book, values, sol) if mode == "REBALANCE" else 0.0
    available = book.cash + proceeds - book.params.cash_reserve_pct * book.total_value
    _buys(book, values, available, sol)
    return sol
