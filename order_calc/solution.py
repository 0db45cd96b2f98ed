"""What a solver returns, its total deviation, and the constraint check every solution passes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from order_calc.valuation import Book

_TOL = 1e-9


@dataclass
class Solution:
    """Rebalancing trades (after the harvests): quantities by symbol, plus diagnostics."""

    solver: str
    sells: dict[str, float] = field(default_factory=dict)
    buys: dict[str, float] = field(default_factory=dict)
    diagnostics: list[str] = field(default_factory=list)

    def cash_after(self, book: Book) -> float:
        """Cash once these trades are done."""
        p = book.prices
        return book.cash + sum(q * p[s] for s, q in self.sells.items()) - sum(q * p[s] for s, q in self.buys.items())


def sleeve_values_after(book: Book, sol: Solution) -> np.ndarray:
    """Every sleeve's value once the solution's trades are done."""
    values = book.sleeve_values()
    for sign, trades in ((-1.0, sol.sells), (1.0, sol.buys)):
        for sym, q in trades.items():
            values[book.position[sym][0]] += sign * q * book.prices[sym]
    return values


def deviation(book: Book, sol: Solution) -> float:
    """Σ_k |value_k - T_k| after the trades: what the MILP minimises, the greedy/MILP yardstick."""
    return float(np.abs(sleeve_values_after(book, sol) - book.targets).sum())


def violations(book: Book, mode: str, sol: Solution) -> list[str]:
    """Every constraint of step 5 the solution breaks (empty when it is sound).

    Cash never negative and, when anything is bought, at least the reserve; every trade
    worth at least min_trade_value; no buy of a restricted symbol or of one sold in this
    plan; no sell of a symbol bought in this plan; sells within holdings and only in
    REBALANCE mode; whole shares (or 4 decimals when fractional).
    """
    params = book.params
    problems: list[str] = []
    scale = 1.0 if not params.fractional else 10_000.0
    for side, trades in (("sell", sol.sells), ("buy", sol.buys)):
        for sym, q in trades.items():
            value = q * book.prices[sym]
            if q <= 0 or abs(q * scale - round(q * scale)) > 1e-6:
                problems.append(f"{side} {sym}: bad quantity {q}")
            if value < params.min_trade_value * (1 - _TOL):
                problems.append(f"{side} {sym}: worth {value} < min_trade_value")
    for sym, q in sol.sells.items():
        if mode != "REBALANCE":
            problems.append(f"sell {sym} in {mode} mode")
        if q > book.holding(sym) + _TOL or sym in book.bought or sym in sol.buys:
            problems.append(f"sell {sym}: over the holding or also bought")
    for sym in sol.buys:
        if book.is_restricted(sym) or sym in book.sold:
            problems.append(f"buy {sym}: restricted or sold in this plan")
    cash = sol.cash_after(book)
    floor = params.cash_reserve_pct * book.total_value if sol.buys else 0.0
    if cash < floor - _TOL * max(1.0, book.total_value):
        problems.append(f"cash after {cash} < {floor}")
    return problems
