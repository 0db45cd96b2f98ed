"""The portfolio manager's hooks into tradeflow (entry point ``tradeflow.plugins``).

``register(cli)`` registers the trading expression functions (:mod:`portfolio_manager.expressions`),
adds the ``pm`` and ``accounts`` command groups to the CLI when given one, and returns the hooks
the engine uses (see :mod:`engine.plugins`): ``demo(count)``, ``fleets()``, ``service_modules``,
``beat_schedule()``, ``console()`` (the review pages of the web console) and ``worker(settings)``
(the worker bootstrap's). Those hooks are called at the edges (the app's configuration, the
console's app factory, the worker's bootstrap), once each: they read :class:`PMSettings` there. The engine itself
knows no trading words: everything trading comes from here.
"""

from __future__ import annotations

import sys
from typing import Any

from engine.ops.fleet import FleetSpec
from portfolio_manager.cli import accounts, pm
from portfolio_manager.config import PMSettings
from portfolio_manager.errors import PortfolioError
from portfolio_manager.expressions import register_expression_functions
from portfolio_manager.shadow_cli import COMMANDS as SHADOW_COMMANDS

# Every `tradeflow` command loads this module: the hooks below import what only they need
# (celery and the calendars for the schedule, the demo's fleet and book) when they are called.

#: Queues of the portfolio manager's services, with the pool that suits them. The portfolio
#: manager's steps are short (a Redis book, proposals, the brokerage) but their Python
#: (validation, Celery, the engine) is CPU: one threaded process holds one core by its GIL, so
#: it runs as 4 prefork processes (10,000 accounts: 76 s against 84.5 s as 16 threads, see
#: BENCHMARKS.md). A book behind slow HTTP wants more: ``tradeflow workers --fleet``.
PM_FLEET = ("portfolio_manager", "prefork", 4)
ORDER_CALC_FLEET = ("order_calc", "prefork", 2)
#: The modules a worker imports to serve the portfolio manager's and the order calculation's actions.
SERVICE_MODULES = ("portfolio_manager.worker", "order_calc.actions")


def fleets() -> list[FleetSpec]:
    """The portfolio manager's worker fleets (the engine adds its own ``engine`` fleet)."""
    return [FleetSpec(*PM_FLEET), FleetSpec(*ORDER_CALC_FLEET)]


def beat_schedule() -> dict[str, Any]:
    """The morning rebalance's beat entries (none with ``TRADEFLOW_MORNING_RUN=0``)."""
    from portfolio_manager.daily import morning_schedule  # celery, pandas: see the note at the top

    settings = PMSettings.from_env()
    return morning_schedule(settings.morning_at) if settings.morning_run else {}


def demo(count: int) -> None:
    """``tradeflow demo``: the morning rebalance end to end (see :mod:`portfolio_manager.demo`)."""
    from portfolio_manager.demo import run_demo  # see the note at the top

    try:
        run_demo(count)
    except PortfolioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def console_plugin() -> Any:
    """The portfolio managers' pages of the web console (see :mod:`portfolio_manager.console_pages`); called once by
    the console's app factory, it reads the portfolio manager's settings for the console's process."""
    from portfolio_manager.console_pages import plugin  # fastapi: only when the console starts
    from portfolio_manager.services import configure

    configure(PMSettings.from_env())
    return plugin([PM_FLEET[0], ORDER_CALC_FLEET[0]])


def worker(settings: Any) -> None:
    """The worker bootstrap's hook (``engine.worker``, once per worker): the actions' services and the daily
    run's engine are built from ``settings`` (the engine's) and the portfolio manager's, read now."""
    from portfolio_manager.services import configure

    configure(PMSettings.from_env(), settings)


#: The role that decides proposals, named by the rebalances' review node (declared to the engine).
PM_ROLE = "pm"


def register(cli: Any | None = None) -> dict[str, Any]:
    """Register the expression functions, add the ``pm`` and ``accounts`` commands to ``cli`` (when
    given); return the hooks."""
    register_expression_functions()
    if cli is not None:
        for command in SHADOW_COMMANDS:
            pm.add_command(command)
        for group in (pm, accounts):
            if group.name not in cli.commands:
                cli.add_command(group)
    return {"demo": demo, "fleets": fleets, "service_modules": list(SERVICE_MODULES),
            "beat_schedule": beat_schedule, "console": console_plugin, "worker": worker, "roles": [PM_ROLE]}


__all__ = ["register", "fleets", "beat_schedule", "demo", "console_plugin", "worker"]
