"""The trading expression functions, usable in any definition once registered.

- ``market_open(date, exchange)``: when ``exchange`` (``'XTSE'``, ``'XNYS'``) opens on the
  ``'YYYY-MM-DD'`` session ``date``, a UTC timestamp; fails on a day without a session.
- ``market_close(date, exchange)``: when it closes (early closes included).
- ``trading_day(date, exchange)``: true when the exchange has a session that day.

The CLI registers them through the plugin (:mod:`portfolio_manager.plugin`), workers through
:mod:`portfolio_manager.worker`. The calendars are imported on first call: pandas is slow to
import, and a process that never evaluates these functions should not pay for it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from engine.expressions.functions import register_function


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
    from portfolio_manager import calendars  # on first call: pandas is slow to import

    return calendars.market_open(_day(day, "market_open"), _exchange(exchange, "market_open"))


def market_close(day: Any, exchange: Any) -> datetime:
    """market_close(date, exchange): when the exchange closes on that session date (UTC timestamp)."""
    from portfolio_manager import calendars  # on first call: pandas is slow to import

    return calendars.market_close(_day(day, "market_close"), _exchange(exchange, "market_close"))


def trading_day(day: Any, exchange: Any) -> bool:
    """trading_day(date, exchange): true when the exchange has a session on that date."""
    from portfolio_manager import calendars  # on first call: pandas is slow to import

    return calendars.is_trading_day(_day(day, "trading_day"), _exchange(exchange, "trading_day"))


def register_expression_functions() -> None:
    """Make the trading functions callable from expressions (idempotent).

    They are pure (a session's times are the exchange calendar's, whatever day it is asked on):
    the review cut-off a morning's accounts share is computed once, not once per step.
    """
    register_function("market_open", market_open, pure=True)
    register_function("market_close", market_close, pure=True)
    register_function("trading_day", trading_day, pure=True)
