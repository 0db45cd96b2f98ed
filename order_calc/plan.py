"""``plan_orders``: steps 1-7 of ORDER_CALC.md, from request to plan."""

from __future__ import annotations

from typing import Any

from order_calc import lots
from order_calc.greedy import solve_greedy
from order_calc.milp import solve_milp
from order_calc.models import Order, Plan, PlanRequest, parse_request
from order_calc.tlh import apply_history_restrictions, harvest, restriction_list
from order_calc.valuation import Book, decide_mode


def plan_orders(request: PlanRequest | dict[str, Any]) -> Plan:
    """Plan one account's orders for one trading day.

    ``request`` is a :class:`PlanRequest` or its plain-dict (JSON) form; invalid input raises
    :class:`~order_calc.errors.InvalidRequest` naming the field. Pure: no I/O.
    Orders come as TLH sells, TLH buys, rebalance sells, then buys; the last two groups in
    sleeve order, then the order of the sleeve's securities.
    """
    req = parse_request(request)
    book = Book.from_request(req)  # step 1
    apply_history_restrictions(book, req.trade_history)
    harvests = harvest(book, req.trade_history, req.account.tlh_enabled)  # step 2
    mode = decide_mode(book)  # step 3
    if mode == "NONE":
        sol = None
    elif req.parameters.solver == "greedy":
        sol = solve_greedy(book, mode)  # step 4
    else:
        sol = solve_milp(book, mode)  # step 5
    orders = [*harvests.sells, *harvests.buys]
    diagnostics = list(harvests.diagnostics)
    if sol is not None:
        reason = "REBALANCE" if mode == "REBALANCE" else "CASH_INVEST"
        for sym in sorted(sol.sells, key=book.position.__getitem__):
            q, price = sol.sells[sym], book.prices[sym]
            book.cash += q * price
            fills = lots.sell(book, sym, q)  # step 6
            orders.append(Order(side="SELL", symbol=sym, quantity=q, reason=reason, est_value=q * price,
                                lots=fills))
        for sym in sorted(sol.buys, key=book.position.__getitem__):
            q, price = sol.buys[sym], book.prices[sym]
            book.cash -= q * price
            orders.append(Order(side="BUY", symbol=sym, quantity=q, reason=reason, est_value=q * price))
        diagnostics.extend(sol.diagnostics)
    return Plan(
        mode=mode,  # type: ignore[arg-type]
        orders=orders,
        restrictions=restriction_list(book),
        diagnostics=diagnostics,
        cash_after=book.cash,
        solver_used=sol.solver if sol is not None else None,
    )
