"""What a portfolio_manager worker registers: the trading expression functions, the service's
actions (``trade_blocks``, the block gather node's, included), and the beat-started daily run
(the plugin's ``service_modules``, with ``order_calc.actions``).

``celery -A engine.worker worker -Q portfolio_manager`` imports it through the plugin; list it
in ``TRADEFLOW_SERVICE_MODULES`` to choose the modules by hand.
"""

from __future__ import annotations

from portfolio_manager import actions, blocks, daily
from portfolio_manager.expressions import register_expression_functions

register_expression_functions()

#: The Celery tasks this module makes a worker serve (the actions register on import).
TASKS = (actions.SERVICE, blocks.SERVICE, daily.DAILY_TASK)
