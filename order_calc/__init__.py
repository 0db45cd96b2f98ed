"""Order calculation: plan one account's orders for one trading day.

Rebalance to the target mix, invest new cash and harvest tax losses, by the contract of
ORDER_CALC.md. Pure functions on numpy/scipy; no I/O. ``python -m order_calc plan FILE``
is the command-line front end.
"""

from order_calc.errors import InvalidRequest, OrderCalcError
from order_calc.models import Plan, PlanRequest
from order_calc.plan import plan_orders

__all__ = [
    # planning
    "plan_orders",
    # data
    "PlanRequest",
    "Plan",
    # errors
    "OrderCalcError",
    "InvalidRequest",
]
