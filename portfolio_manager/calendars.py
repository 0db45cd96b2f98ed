"""Trading days, opens and closes from ``exchange_calendars`` (XTSE for Canada, XNYS for the US).

Building a calendar costs about 0.1 s (plus ~0.25 s to import pandas and the library once),
so each exchange's calendar is built lazily, once per process, and cached. It covers
``CALENDAR_YEARS_BACK`` years before and ``CALENDAR_YEARS_AHEAD`` years after the current
year; a date outside that window rebuilds the calendar once with a window that includes it.
Construction is guarded by a lock, so threads of a worker share one calendar.

Dates are exchange-local session dates; opens and closes are timezone-aware UTC datetimes
(early closes included, as the library knows them).
"""

from __future__ import annotations

import functools
import threading
import time
import warnings
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from portfolio_manager.book import Region
from portfolio_manager.errors import CalendarError, NotATradingDay

if TYPE_CHECKING:
    from exchange_calendars import ExchangeCalendar

EXCHANGES: dict[Region, str] = {Region.CA: "XTSE", Region.US: "XNYS"}
CALENDAR_YEARS_BACK = 3
CALENDAR_YEARS_AHEAD = 2

_lock = threading.Lock()
_cache: dict[str, ExchangeCalendar] = {}
_build_seconds: dict[str, float] = {}


def exchange_for(region: Region | str) -> str:
    """The exchange whose calendar governs ``region``: XTSE for CA, XNYS for US."""
    try:
        return EXCHANGES[Region(region)]
    except ValueError:
        raise CalendarError(f"unknown region {region!r} (expected one of {[r.value for r in Region]})") from None


def _covers(calendar: ExchangeCalendar, day: date) -> bool:
    return calendar.first_session.date() <= day <= calendar.last_session.date()


def calendar(exchange: str, day: date | None = None) -> ExchangeCalendar:
    """The cached calendar of ``exchange``, (re)built so that it covers ``day`` (default: today)."""
    day = day or datetime.now(UTC).date()
    cached = _cache.get(exchange)
    if cached is not None and _covers(cached, day):
        return cached
    with _lock:
        cached = _cache.get(exchange)
        if cached is not None and _covers(cached, day):
            return cached
        import exchange_calendars  # pandas underneath: seconds to import, so only on first use

        today = datetime.now(UTC).date()
        start = date(min(today.year - CALENDAR_YEARS_BACK, day.year - 1), 1, 1)
        end = date(max(today.year + CALENDAR_YEARS_AHEAD, day.year + 1), 12, 31)
        if cached is not None:
            start = min(start, cached.first_session.date())
            end = max(end, cached.last_session.date())
        began = time.perf_counter()
        try:
            with warnings.catch_warnings():
                # exchange_calendars 4.x trips pandas 3 deprecation warnings while building; not ours to fix.
                warnings.simplefilter("ignore", DeprecationWarning)
                built = exchange_calendars.get_calendar(exchange, start=start.isoformat(), end=end.isoformat())
        except exchange_calendars.errors.InvalidCalendarName:
            raise CalendarError(f"unknown exchange {exchange!r} (XTSE for CA, XNYS for US)") from None
        except ValueError as exc:  # dates outside what the library supports
            raise CalendarError(f"{exchange}: no calendar for {day}: {exc}") from exc
        _build_seconds[exchange] = time.perf_counter() - began
        _cache[exchange] = built
        return built


def build_seconds() -> dict[str, float]:
    """How long the last construction of each cached calendar took, in seconds."""
    return dict(_build_seconds)


def is_trading_day(day: date, exchange: str) -> bool:
    """True when ``exchange`` has a session on ``day``."""
    return bool(calendar(exchange, day).is_session(day.isoformat()))


def _session(day: date, exchange: str) -> ExchangeCalendar:
    cal = calendar(exchange, day)
    if not cal.is_session(day.isoformat()):
        nxt = next_trading_day(day, exchange)
        raise NotATradingDay(
            f"{exchange} has no session on {day.isoformat()} ({day:%A}); the next trading day is {nxt.isoformat()}"
        )
    return cal


def _utc(timestamp: object) -> datetime:
    value: datetime = timestamp.to_pydatetime()  # type: ignore[attr-defined]
    return value.astimezone(UTC)


@functools.lru_cache(maxsize=4096)
def market_open(day: date, exchange: str) -> datetime:
    """When ``exchange`` opens on ``day`` (tz-aware UTC); raises NotATradingDay.

    Cached per (day, exchange): a morning run asks it once per account, and a calendar lookup
    costs about a millisecond (the answer of a past or listed session never changes)."""
    return _utc(_session(day, exchange).session_open(day.isoformat()))


@functools.lru_cache(maxsize=4096)
def market_close(day: date, exchange: str) -> datetime:
    """When ``exchange`` closes on ``day`` (tz-aware UTC, early closes included); raises NotATradingDay."""
    return _utc(_session(day, exchange).session_close(day.isoformat()))


def next_trading_day(day: date, exchange: str) -> date:
    """The first trading day strictly after ``day``."""
    cal = calendar(exchange, day + timedelta(days=10))
    return cal.date_to_session((day + timedelta(days=1)).isoformat(), direction="next").date()


def previous_trading_day(day: date, exchange: str) -> date:
    """The last trading day strictly before ``day``."""
    cal = calendar(exchange, day - timedelta(days=10))
    return cal.date_to_session((day - timedelta(days=1)).isoformat(), direction="previous").date()


def trading_days(start: date, end: date, exchange: str) -> list[date]:
    """Every trading day in ``[start, end]``, in order."""
    if end < start:
        return []
    calendar(exchange, start)
    cal = calendar(exchange, end)
    return [ts.date() for ts in cal.sessions_in_range(start.isoformat(), end.isoformat())]


__all__ = [
    "EXCHANGES",
    "exchange_for",
    "calendar",
    "build_seconds",
    "is_trading_day",
    "market_open",
    "market_close",
    "next_trading_day",
    "previous_trading_day",
    "trading_days",
]
