"""The order calculation as a service action (queue ``order_calc``, CPU-bound: a prefork fleet).

``order_calc.plan_orders`` takes the request of ORDER_CALC.md (built by the portfolio
manager's ``fetch_target``) and answers ``ok`` with the plan, plus two counts a definition's
choices can test cheaply: ``order_count`` and ``tlh_harvests``, and ``drift_after`` (the largest
sleeve drift once the orders fill, :mod:`order_calc.drift`). A request that breaks the
contract fails the instance at once, naming the field; it is never retried (the same input
would fail again).
"""

from __future__ import annotations

from typing import Any

from engine.errors import ActionFailed
from engine.service import Transition, ok
from engine.service import action as register_action
from order_calc.drift import drift_after
from order_calc.errors import InvalidRequest
from order_calc.plan import plan_orders as calculate


def _more(count: int) -> str:
    return f" (and {count} more problem{'s' if count > 1 else ''})" if count else ""


@register_action("order_calc", "plan_orders", reads_only=True)
def plan_orders(request: dict[str, Any]) -> Transition:
    """Plan one account's orders for one trading day (see ORDER_CALC.md)."""
    try:
        plan = calculate(request)
    except InvalidRequest as exc:
        account = (request.get("account") or {}).get("id") if isinstance(request, dict) else None
        owner = f" for account {account}" if account else ""
        raise ActionFailed(f"invalid order calculation request{owner}: field {exc.field or '(request)'}: "
                           f"{exc.problems[0].message}{_more(len(exc.problems) - 1)}") from exc
    data = plan.model_dump(mode="json")
    data["order_count"] = len(data["orders"])
    data["tlh_harvests"] = sum(1 for o in data["orders"] if o["reason"] == "TLH" and o["side"] == "SELL")
    data["solver"] = plan.solver_used
    if isinstance(request, dict):
        data["drift_after"] = round(drift_after(request, data["orders"]), 6)
    return ok(data)


__all__ = ["plan_orders"]
