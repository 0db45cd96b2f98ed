"""The portfolio manager's hooks into tradeflow (entry point ``tradeflow.plugins``).

``register(cli)`` adds the ``pm`` and ``accounts`` command groups, registers the trading
expression functions, and returns the hooks the engine's CLI uses: ``demo(count)`` and
``fleets()``. The engine itself knows no trading words: everything trading comes from here.

Expression functions (usable in any definition once this plugin is loaded; the workers load
them with :mod:`portfolio_manager.actions`):

- ``market_open(date, exchange)``: when ``exchange`` (``'XTSE'``, ``'XNYS'``) opens on the
  ``'YYYY-MM-DD'`` session ``date``, a UTC timestamp; fails on a day without a session.
- ``market_close(date, exchange)``: when it closes (early closes included).
- ``trading_day(date, exchange)``: true when the exchange has a session that day.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from engine.expressions.functions import register_function

#: Queues of the portfolio manager's services, with the pool that suits them. The portfolio
#: manager's steps are short (a Redis book, proposals, the brokerage) but their Python
#: (validation, Celery, the engine) is CPU: one threaded process holds one core by its GIL, so
#: it runs as 4 prefork processes (10,000 accounts: 76 s against 84.5 s as 16 threads, see
#: BENCHMARKS.md). A book behind slow HTTP wants more: ``tradeflow workers --fleet``.
PM_FLEET = ("portfolio_manager", "prefork", 4)
ORDER_CALC_FLEET = ("order_calc", "prefork", 2)


def _day(value: Any, fn: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if not isinstance(value, str):
        raise ValueError(f"{fn}(): the date must be a 'YYYY-MM-DD' string, got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{fn}(): {value!r} is not a 'YYYY-MM-DD' date") from None


def _exchange(value: Any, fn: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{fn}(): the exchange must be a code such as 'XTSE' or 'XNYS', got {value!r}")
    return value


def market_open(day: Any, exchange: Any) -> datetime:
    """market_open(date, exchange): when the exchange opens on that session date (UTC timestamp)."""
    from portfolio_manager import calendars

    return calendars.market_open(_day(day, "market_open"), _exchange(exchange, "market_open"))


def market_close(day: Any, exchange: Any) -> datetime:
    """market_close(date, exchange): when the exchange closes on that session date (UTC timestamp)."""
    from portfolio_manager import calendars

    return calendars.market_close(_day(day, "market_close"), _exchange(exchange, "market_close"))


def trading_day(day: Any, exchange: Any) -> bool:
    """trading_day(date, exchange): true when the exchange has a session on that date."""
    from portfolio_manager import calendars

    return calendars.is_trading_day(_day(day, "trading_day"), _exchange(exchange, "trading_day"))


def register_expression_functions() -> None:
    """Make the trading functions callable from expressions (idempotent)."""
    register_function("market_open", market_open)
    register_function("market_close", market_close)
    register_function("trading_day", trading_day)


def fleets() -> list[Any]:
    """The portfolio manager's worker fleets (the engine adds its own ``engine`` fleet)."""
    from engine.ops.fleet import FleetSpec

    return [FleetSpec(*PM_FLEET), FleetSpec(*ORDER_CALC_FLEET)]


def demo(count: int) -> None:
    """``tradeflow demo``: the morning rebalance end to end (see :mod:`portfolio_manager.demo`)."""
    import sys

    from portfolio_manager.demo import DemoRefused, run_demo

    try:
        run_demo(count)
    except DemoRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def register(cli: Any) -> dict[str, Any]:
    """Add the ``pm`` and ``accounts`` commands to ``cli``; return the hooks (demo, fleets)."""
    from portfolio_manager.cli import accounts, pm

    register_expression_functions()
    if "pm" not in cli.commands:
        cli.add_command(pm)
    if "accounts" not in cli.commands:
        cli.add_command(accounts)
    return {"demo": demo, "fleets": fleets}


__all__ = ["register", "register_expression_functions", "market_open", "market_close", "trading_day", "fleets"]
