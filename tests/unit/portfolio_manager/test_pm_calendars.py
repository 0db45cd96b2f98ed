"""Trading days, opens and closes from exchange_calendars (XTSE, XNYS)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from portfolio_manager import calendars
from portfolio_manager.book import Region
from portfolio_manager.errors import CalendarError, NotATradingDay


def test_exchange_for_region() -> None:
    assert calendars.exchange_for(Region.CA) == "XTSE"
    assert calendars.exchange_for("US") == "XNYS"
    with pytest.raises(CalendarError, match="unknown region 'EU'"):
        calendars.exchange_for("EU")


@pytest.mark.parametrize(
    ("day", "exchange", "trading"),
    [
        (date(2025, 7, 4), "XNYS", False),  # Independence Day
        (date(2025, 7, 4), "XTSE", True),
        (date(2025, 7, 1), "XTSE", False),  # Canada Day
        (date(2025, 7, 1), "XNYS", True),
        (date(2025, 8, 4), "XTSE", False),  # Civic Holiday
        (date(2025, 11, 27), "XNYS", False),  # Thanksgiving (US)
        (date(2025, 10, 13), "XTSE", False),  # Thanksgiving (Canada)
        (date(2025, 10, 13), "XNYS", True),
        (date(2025, 6, 7), "XNYS", False),  # a Saturday
        (date(2025, 6, 2), "XNYS", True),
    ],
)
def test_trading_days(day: date, exchange: str, trading: bool) -> None:
    assert calendars.is_trading_day(day, exchange) is trading


def test_opens_and_closes_are_utc() -> None:
    opened = calendars.market_open(date(2025, 6, 2), "XNYS")
    assert opened == datetime(2025, 6, 2, 13, 30, tzinfo=UTC)
    assert opened.utcoffset().total_seconds() == 0
    assert calendars.market_close(date(2025, 6, 2), "XNYS") == datetime(2025, 6, 2, 20, 0, tzinfo=UTC)
    assert calendars.market_open(date(2025, 1, 2), "XNYS") == datetime(2025, 1, 2, 14, 30, tzinfo=UTC)  # EST
    assert calendars.market_open(date(2025, 6, 2), "XTSE") == datetime(2025, 6, 2, 13, 30, tzinfo=UTC)


def test_early_close_after_us_thanksgiving() -> None:
    assert calendars.market_close(date(2025, 11, 28), "XNYS") == datetime(2025, 11, 28, 18, 0, tzinfo=UTC)


def test_open_on_a_holiday_says_so_and_names_the_next_day() -> None:
    with pytest.raises(NotATradingDay, match=r"XNYS has no session on 2025-07-04 \(Friday\).*2025-07-07"):
        calendars.market_open(date(2025, 7, 4), "XNYS")
    with pytest.raises(NotATradingDay):
        calendars.market_close(date(2025, 7, 1), "XTSE")


def test_next_and_previous_trading_day() -> None:
    assert calendars.next_trading_day(date(2025, 7, 3), "XNYS") == date(2025, 7, 7)
    assert calendars.next_trading_day(date(2025, 6, 30), "XTSE") == date(2025, 7, 2)
    assert calendars.next_trading_day(date(2025, 6, 2), "XNYS") == date(2025, 6, 3)  # strictly after
    assert calendars.previous_trading_day(date(2025, 7, 7), "XNYS") == date(2025, 7, 3)


def test_trading_days_in_a_range() -> None:
    days = calendars.trading_days(date(2025, 6, 30), date(2025, 7, 8), "XTSE")
    assert days == [
        date(2025, 6, 30),
        date(2025, 7, 2),
        date(2025, 7, 3),
        date(2025, 7, 4),
        date(2025, 7, 7),
        date(2025, 7, 8),
    ]
    assert calendars.trading_days(date(2025, 7, 8), date(2025, 7, 1), "XTSE") == []


def test_unknown_exchange() -> None:
    with pytest.raises(CalendarError, match="unknown exchange 'XXXX'"):
        calendars.is_trading_day(date(2025, 7, 4), "XXXX")


def test_calendar_is_built_once_and_widened_on_demand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calendars, "_cache", {})  # built here, whatever other tests of this process asked for
    monkeypatch.setattr(calendars, "_build_seconds", {})
    first = calendars.calendar("XNYS")
    assert calendars.calendar("XNYS", date(2025, 6, 2)) is first
    assert calendars.build_seconds()["XNYS"] > 0  # timed once, when built
    # What the build costs is bounded by its window, not judged on this machine's clock: a few years around today.
    today = datetime.now(UTC).date()
    assert first.first_session.year == today.year - calendars.CALENDAR_YEARS_BACK
    assert first.last_session.year == today.year + calendars.CALENDAR_YEARS_AHEAD
    far = date(first.last_session.year + 3, 7, 6)  # beyond the cached window
    assert calendars.is_trading_day(far, "XNYS") is (far.weekday() < 5)
    widened = calendars.calendar("XNYS")
    assert widened is not first
    assert widened.first_session <= first.first_session  # the old range is still covered
    assert calendars.calendar("XNYS", far) is widened
