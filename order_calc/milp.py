"""Step 5, the MILP solver: the trades that bring the sleeves closest to their targets.

Variables, per tradeable security i: an integer quantity q_i (shares, or 1e-4 shares when
fractional) and a binary flag y_i; per sleeve k with a tradeable security: a deviation
d_k ≥ |value_k - T_k|; and one slack u ∈ [0, max(0, R - cash)] that lets a plan without
buys leave cash under the reserve R = cash_reserve_pct * V, as greedy does.

    minimise   Σ d_k + 1e-6 * Σ price_i * q_i
    subject to Σ buys - Σ sells - u ≤ cash - R        (cash budget)
               u + (R - cash) y_i ≤ R - cash           (any buy: no slack)
               price_i q_i ≥ min_trade_value * y_i     (minimum trade value)
               q_i ≤ ub_i y_i                           (no trade without its flag)
               y_buy + y_sell ≤ 1 per symbol            (never buy and sell one security)
               ±(value_k + Σ_{i∈k} ±price_i q_i - T_k) ≤ d_k

Buys are the greedy's: one per sleeve, its first unrestricted security (not one sold in
this plan); restricted securities get no buy variable. Sells exist only in REBALANCE
mode, for held securities not bought in this plan. The rounded solution is checked
against every constraint (:func:`order_calc.solution.violations`); greedy is returned when
the solver fails, breaks a constraint, or leaves a larger total deviation than greedy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from order_calc import defaults
from order_calc.greedy import solve_greedy
from order_calc.solution import Solution, deviation, violations
from order_calc.valuation import Book


@dataclass(frozen=True)
class _Var:
    symbol: str
    sleeve: int
    sign: float  # +1 buy, -1 sell
    unit_value: float  # money per unit of q
    upper: int


def _variables(book: Book, mode: str, unit: float) -> list[_Var]:
    out: list[_Var] = []
    if mode == "REBALANCE":
        for sleeve in book.sleeves:
            for sym in sleeve.securities:
                held = book.holding(sym)
                upper = int(np.floor(held / unit + 1e-9))
                if upper > 0 and sym not in book.bought:
                    out.append(_Var(sym, sleeve.index, -1.0, book.prices[sym] * unit, upper))
    budget = book.cash + sum(v.unit_value * v.upper for v in out)
    for sleeve in book.sleeves:
        sym = book.buy_security(sleeve.index)
        if sym is None or sym in book.sold or sym not in book.prices:
            continue
        upper = int(np.floor(budget / (book.prices[sym] * unit) + 1e-9))
        if upper > 0:
            out.append(_Var(sym, sleeve.index, 1.0, book.prices[sym] * unit, upper))
    return out


def _solve(book: Book, mode: str) -> Solution | None:
    """Build and solve the MILP; the rounded solution, or None when the solver gives none."""
    params = book.params
    unit = 1e-4 if params.fractional else 1.0
    tvars = _variables(book, mode, unit)
    if not tvars:
        return Solution(solver="milp")
    n = len(tvars)
    sleeves = sorted({v.sleeve for v in tvars})
    n_dev = len(sleeves)
    n_all = 2 * n + n_dev + 1
    iu = n_all - 1  # the slack u
    reserve = params.cash_reserve_pct * book.total_value
    gap = max(0.0, reserve - book.cash)
    signed = np.array([v.sign * v.unit_value for v in tvars])
    unit_values = np.array([v.unit_value for v in tvars])
    upper = np.array([v.upper for v in tvars], dtype=float)

    rows: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []

    def row(coeffs: dict[int, float] | np.ndarray, low: float, high: float) -> None:
        r = coeffs if isinstance(coeffs, np.ndarray) else np.zeros(n_all)
        if isinstance(coeffs, dict):
            for i, c in coeffs.items():
                r[i] = c
        rows.append(r)
        lo.append(low)
        hi.append(high)

    cash_row = np.zeros(n_all)
    cash_row[:n] = signed
    cash_row[iu] = -1.0
    row(cash_row, -np.inf, book.cash - reserve)
    # q_i - ub_i y_i <= 0 and min_trade y_i - v_i q_i <= 0, as one block each
    block = np.zeros((n, n_all))
    block[np.arange(n), np.arange(n)] = 1.0
    block[np.arange(n), n + np.arange(n)] = -upper
    rows.extend(block)
    lo.extend([-np.inf] * n)
    hi.extend([0.0] * n)
    if params.min_trade_value > 0:
        block = np.zeros((n, n_all))
        block[np.arange(n), np.arange(n)] = -unit_values
        block[np.arange(n), n + np.arange(n)] = params.min_trade_value
        rows.extend(block)
        lo.extend([-np.inf] * n)
        hi.extend([0.0] * n)
    first_side: dict[str, int] = {}
    for i, v in enumerate(tvars):
        if v.sign > 0 and gap > 0:
            row({iu: 1.0, n + i: gap}, -np.inf, gap)
        if v.symbol in first_side:
            row({n + first_side[v.symbol]: 1.0, n + i: 1.0}, -np.inf, 1.0)
        first_side.setdefault(v.symbol, i)
    values = book.sleeve_values()
    for j, k in enumerate(sleeves):
        r = np.zeros(n_all)
        members = [i for i, v in enumerate(tvars) if v.sleeve == k]
        r[members] = signed[members]
        drift = float(values[k] - book.targets[k])
        up = r.copy()
        up[2 * n + j] = -1.0
        row(up, -np.inf, -drift)
        down = -r
        down[2 * n + j] = -1.0
        row(down, -np.inf, drift)

    cost = np.zeros(n_all)
    cost[:n] = defaults.MILP_TURNOVER_WEIGHT * unit_values
    cost[2 * n : 2 * n + n_dev] = 1.0
    integrality = np.zeros(n_all)
    integrality[: 2 * n] = 1
    lower_b = np.zeros(n_all)
    upper_b = np.concatenate([upper, np.ones(n), np.full(n_dev, np.inf), [gap]])
    res = milp(
        cost,
        integrality=integrality,
        bounds=Bounds(lower_b, upper_b),
        constraints=LinearConstraint(np.vstack(rows), np.array(lo), np.array(hi)),
        options={"time_limit": defaults.MILP_TIME_LIMIT},
    )
    if res.x is None:
        return None
    sol = Solution(solver="milp")
    q = np.rint(res.x[:n])
    for v, units in zip(tvars, q, strict=True):
        if units <= 0:
            continue
        side = sol.buys if v.sign > 0 else sol.sells
        side[v.symbol] = side.get(v.symbol, 0.0) + float(units) * unit if not params.fractional \
            else side.get(v.symbol, 0.0) + float(units) / 10_000
    return sol


def solve_milp(book: Book, mode: str) -> Solution:
    """The MILP plan for ``mode``, or the greedy plan when the MILP's is unsound or not better.

    The returned solution's ``solver`` says which one it is.
    """
    greedy = solve_greedy(book, mode)
    if mode == "NONE":
        return greedy
    try:
        sol = _solve(book, mode)
    except (ValueError, np.linalg.LinAlgError):  # pragma: no cover - defensive: solver refused the model
        sol = None
    if sol is None or violations(book, mode, sol):
        return greedy
    if deviation(book, sol) > deviation(book, greedy):
        return greedy
    return sol
