"""Step 5, the MILP solver: the trades that bring the sleeves closest to their targets.

Variables, per tradeable security i: a quantity q_i (integer shares; continuous when
``fractional``, truncated to 4 decimals afterwards) and a binary flag y_i; per sleeve k with
a tradeable security: a deviation d_k >= |value_k - T_k|; and one slack u in
[0, max(0, R - cash)] that lets a plan without buys leave cash under the reserve
R = cash_reserve_pct * V, as greedy does.

    minimise   sum d_k + 1e-6 * sum price_i * q_i
    subject to sum buys - sum sells - u <= cash - R      (cash budget)
               u + (R - cash) * y_i <= R - cash          (any buy: no slack)
               price_i * q_i >= min_trade_value * y_i    (minimum trade value)
               q_i <= ub_i * y_i                         (no trade without its flag)
               y_buy + y_sell <= 1 per symbol            (never buy and sell one security)
               +-(value_k + sum_{i in k} +-price_i * q_i - T_k) <= d_k

Which trades get variables: sells of held securities not bought in this plan, in the
sleeves over their target (REBALANCE mode only); one buy per sleeve under its target or
with sells, of the security greedy would buy (its first unrestricted one, not one sold in
this plan), so that an overshooting sell can be topped up as greedy does. Bounds: a sell at
most the holding and the sleeve's excess plus one minimum trade (or one share); a buy at
most the cash budget and the sleeve's deficit plus its sells plus one minimum trade (or one
share). Trading past those only adds deviation, so the search stays small.

Whole shares: for a sleeve with a single trade variable q, its deviation |gap - p q| at
integer q lies on or above the chord between floor(gap / p) and the next integer; that cut
is added, so the LP relaxation is nearly integral and HiGHS stops at the root.

The solution is checked against every constraint (:func:`order_calc.solution.violations`);
greedy is returned when the solver fails, breaks a constraint, or leaves a larger total
deviation than greedy (strictly larger: ties keep the MILP's plan). The solver is bounded by
work (``defaults.MILP_NODE_LIMIT`` nodes, one thread), never by the wall clock: the plan is
a function of the request alone.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from order_calc import defaults
from order_calc.greedy import solve_greedy
from order_calc.numeric import truncate4
from order_calc.solution import Solution, deviation, violations
from order_calc.valuation import Book

_SOLVER_SLACK = 1e-7  # HiGHS returns 2.9999999 for 3; truncation must not lose the share


@dataclass(frozen=True)
class _Var:
    symbol: str
    sleeve: int
    sign: float  # +1 buy, -1 sell
    price: float
    upper: float


def _variables(book: Book, mode: str, values: np.ndarray) -> list[_Var]:
    """Sells in overweight sleeves (REBALANCE only), one buy per sleeve with room, with bounds."""
    params = book.params
    fractional = params.fractional
    out: list[_Var] = []
    drift = values - book.targets
    if mode == "REBALANCE":
        for sleeve in book.sleeves:
            excess = float(drift[sleeve.index])
            if excess <= 0:
                continue
            for sym in sleeve.securities:
                held = book.holding(sym)
                if held <= 0 or sym in book.bought:
                    continue
                price = book.prices[sym]
                upper = min(held, (excess + max(price, params.min_trade_value)) / price)
                upper = truncate4(upper) if fractional else math.floor(upper + 1e-9)
                if upper > 0:
                    out.append(_Var(sym, sleeve.index, -1.0, price, upper))
    budget = book.cash + sum(v.upper * v.price for v in out)
    sellable = {k: sum(v.upper * v.price for v in out if v.sleeve == k) for k in {v.sleeve for v in out}}
    for sleeve in book.sleeves:
        room = float(-drift[sleeve.index]) + sellable.get(sleeve.index, 0.0)
        sym = book.buy_security(sleeve.index)
        if room <= 0 or sym is None or sym in book.sold or sym not in book.prices:
            continue
        price = book.prices[sym]
        upper = min(budget, room + max(price, params.min_trade_value)) / price
        upper = truncate4(upper) if fractional else math.floor(upper + 1e-9)
        if upper > 0:
            out.append(_Var(sym, sleeve.index, 1.0, price, upper))
    return out


def _rounding_cut(gap: float, price: float, iq: int, id_: int, n_all: int) -> np.ndarray:
    """Row of the cut d >= r + (p - 2r)(q - f), f = floor(gap / p), r = gap - p f.

    For a sleeve with one trade variable q (integer), its deviation is |gap - p q|, whose
    integer points all lie on or above the chord from (f, r) to (f + 1, p - r): a valid cut
    that makes the LP relaxation nearly integral (the root bound jumps to the optimum).
    """
    f = math.floor(gap / price)
    r = gap - price * f
    row = np.zeros((1, n_all))
    row[0, iq], row[0, id_] = price - 2 * r, -1.0  # (p - 2r) q - d <= (p - 2r) f - r
    return row


def _rounding_cut_rhs(gap: float, price: float) -> float:
    f = math.floor(gap / price)
    r = gap - price * f
    return (price - 2 * r) * f - r


def _model(book: Book, tvars: list[_Var], values: np.ndarray) -> tuple[np.ndarray, ...]:
    """The MILP as (cost, integrality, lower, upper, A, row_lo, row_hi)."""
    params = book.params
    n = len(tvars)
    sleeves = sorted({v.sleeve for v in tvars})
    n_all = 2 * n + len(sleeves) + 1
    iu = n_all - 1  # the slack u
    gap = max(0.0, params.cash_reserve_pct * book.total_value - book.cash)
    prices = np.array([v.price for v in tvars])
    signed = np.array([v.sign for v in tvars]) * prices
    upper = np.array([v.upper for v in tvars])
    idx = np.arange(n)

    rows: list[np.ndarray] = []
    hi: list[float] = []
    cash = np.zeros((1, n_all))
    cash[0, :n], cash[0, iu] = signed, -1.0
    rows.append(cash)
    hi.append(book.cash - params.cash_reserve_pct * book.total_value)
    flag = np.zeros((n, n_all))  # q_i - ub_i y_i <= 0
    flag[idx, idx], flag[idx, n + idx] = 1.0, -upper
    rows.append(flag)
    hi.extend([0.0] * n)
    if params.min_trade_value > 0:  # min_trade y_i - p_i q_i <= 0
        # Fractional quantities are truncated to 4 decimals afterwards: keep that much margin.
        margin = prices * 1e-4 if params.fractional else 0.0
        floor = np.zeros((n, n_all))
        floor[idx, idx], floor[idx, n + idx] = -prices, params.min_trade_value + margin
        rows.append(floor)
        hi.extend([0.0] * n)
    buys = [i for i, v in enumerate(tvars) if v.sign > 0]
    if gap > 0 and buys:  # u + gap y_i <= gap
        slack = np.zeros((len(buys), n_all))
        slack[:, iu] = 1.0
        slack[np.arange(len(buys)), [n + i for i in buys]] = gap
        rows.append(slack)
        hi.extend([gap] * len(buys))
    sell_of = {v.symbol: i for i, v in enumerate(tvars) if v.sign < 0}
    for i in buys:  # y_buy + y_sell <= 1
        j = sell_of.get(tvars[i].symbol)
        if j is not None:
            both = np.zeros((1, n_all))
            both[0, n + i] = both[0, n + j] = 1.0
            rows.append(both)
            hi.append(1.0)
    member = np.array([v.sleeve for v in tvars])
    for j, k in enumerate(sleeves):  # +-(value_k + trades - T_k) <= d_k
        dev = np.zeros((2, n_all))
        mask = member == k
        dev[0, :n][mask], dev[1, :n][mask] = signed[mask], -signed[mask]
        dev[:, 2 * n + j] = -1.0
        drift = float(values[k] - book.targets[k])
        rows.append(dev)
        hi.extend([-drift, drift])
        i = int(np.flatnonzero(mask)[0])
        if not params.fractional and mask.sum() == 1 and tvars[i].sign * drift < 0:  # q moves toward T_k
            rows.append(_rounding_cut(abs(drift), prices[i], i, 2 * n + j, n_all))
            hi.append(_rounding_cut_rhs(abs(drift), prices[i]))

    cost = np.zeros(n_all)
    cost[:n] = defaults.MILP_TURNOVER_WEIGHT * prices
    cost[2 * n : iu] = 1.0
    integrality = np.zeros(n_all)
    integrality[:n] = 0 if params.fractional else 1
    integrality[n : 2 * n] = 1
    lower_b = np.zeros(n_all)
    upper_b = np.concatenate([upper, np.ones(n), np.full(len(sleeves), np.inf), [gap]])
    a = np.vstack(rows)
    return cost, integrality, lower_b, upper_b, a, np.full(len(hi), -np.inf), np.array(hi)


#: HiGHS options passed through scipy: the feasibility-jump heuristic costs more than the
#: whole search on these small models (about 19 ms -> 7 ms median per plan, same optima).
_HIGHS_TUNING = {"mip_heuristic_run_feasibility_jump": False}


def _run_highs(
    cost: np.ndarray, integrality: np.ndarray, bounds: Bounds, constraints: LinearConstraint
) -> np.ndarray | None:
    """Solve with scipy's HiGHS; the solution vector, or None.

    The search is bounded by work, never by the wall clock: at most
    ``defaults.MILP_NODE_LIMIT`` branch-and-bound nodes, on one thread, and no time limit, so
    the same model gives the same answer on any machine at any load (past the node limit,
    HiGHS's best integer solution so far -- itself a function of the model alone).

    Tries the tuned options first; if this scipy's HiGHS lacks them, or its presolve fails
    (HiGHS 1.12 can report "Solve error" after presolve on a sound model), tries again
    plainly, then without presolve.
    """
    base: dict[str, object] = {"node_limit": defaults.MILP_NODE_LIMIT, "threads": defaults.MILP_THREADS}
    for options in ({**base, **_HIGHS_TUNING}, base, {**base, "presolve": False}):
        try:
            with warnings.catch_warnings():  # scipy warns that it passes the HiGHS option verbatim
                warnings.filterwarnings("ignore", message="Unrecognized options", category=RuntimeWarning)
                res = milp(cost, integrality=integrality, bounds=bounds, constraints=constraints, options=options)
        except (AttributeError, TypeError, KeyError):  # an option this HiGHS does not know
            continue
        if res.x is not None:
            return np.asarray(res.x)
        if res.status in (1, 2, 3):  # node limit without a solution, infeasible, unbounded: give up
            return None
    return None


def _solve(book: Book, mode: str) -> Solution | None:
    """Build and solve the MILP; the solution in shares, or None when the solver gives none."""
    values = book.sleeve_values()
    tvars = _variables(book, mode, values)
    if not tvars:
        return Solution(solver="milp")
    cost, integrality, lower_b, upper_b, a, lo, hi = _model(book, tvars, values)
    x = _run_highs(cost, integrality, Bounds(lower_b, upper_b), LinearConstraint(a, lo, hi))
    if x is None:
        return None
    sol = Solution(solver="milp")
    for v, xi in zip(tvars, x[: len(tvars)], strict=True):
        q = min(truncate4(xi + _SOLVER_SLACK), v.upper) if book.params.fractional else float(np.rint(xi))
        if q > 0:
            (sol.buys if v.sign > 0 else sol.sells)[v.symbol] = q
    if book.params.fractional:
        _repair_cash(book, sol)
        _polish(book, sol, tvars)
    return sol


def _polish(book: Book, sol: Solution, tvars: list[_Var]) -> None:
    """Give back the 1e-4 share that truncation took, where it brings a sleeve closer.

    Sells first (they bring cash), then buys while the cash (and the reserve) allows.
    """
    step = 1e-4
    reserve = book.params.cash_reserve_pct * book.total_value
    values = book.sleeve_values()
    for sign, trades in ((-1.0, sol.sells), (1.0, sol.buys)):
        for sym, q in trades.items():
            values[book.position[sym][0]] += sign * q * book.prices[sym]
    for v in sorted(tvars, key=lambda v: v.sign):
        trades = sol.sells if v.sign < 0 else sol.buys
        q = trades.get(v.symbol)
        if q is None:
            continue
        bigger = truncate4(q + step + 1e-9)
        move = v.sign * step * v.price
        gap = values[v.sleeve] - book.targets[v.sleeve]
        if bigger > v.upper or abs(gap + move) >= abs(gap):
            continue
        if v.sign > 0 and sol.cash_after(book) - step * v.price < reserve - 1e-9:
            continue
        trades[v.symbol] = bigger
        values[v.sleeve] += move


def _repair_cash(book: Book, sol: Solution) -> None:
    """Truncated sells bring in a little less than planned: trim the largest buy to fit."""
    reserve = book.params.cash_reserve_pct * book.total_value if sol.buys else 0.0
    while sol.buys and sol.cash_after(book) < reserve - 1e-9:
        sym = max(sol.buys, key=lambda s: sol.buys[s] * book.prices[s])
        short = reserve - sol.cash_after(book)
        cut = math.ceil(short / book.prices[sym] * 10_000 - 1e-9) / 10_000
        sol.buys[sym] = truncate4(sol.buys[sym] - cut)
        if sol.buys[sym] <= 0:
            del sol.buys[sym]
            reserve = book.params.cash_reserve_pct * book.total_value if sol.buys else 0.0


def solve_milp(book: Book, mode: str) -> Solution:
    """The MILP plan for ``mode``, or the greedy plan when the MILP's is unsound or not better.

    The returned solution's ``solver`` says which one it is.
    """
    greedy = solve_greedy(book, mode)
    if mode == "NONE":
        return greedy
    try:
        sol = _solve(book, mode)
    except (ValueError, np.linalg.LinAlgError):  # the solver refused the model
        sol = None
    if sol is None or violations(book, mode, sol):
        return greedy
    if deviation(book, sol) > deviation(book, greedy):
        return greedy
    return sol
