"""Functions callable from expressions: the registry and the engine's built-ins.

Built-ins: ``now()``, ``at(date, 'HH:MM', tz)``, ``date_of(timestamp, tz)``, ``days(n)``.
Plugins add their own with :func:`register_function` (e.g. ``market_open(date, exchange)``).
CEL's own ``timestamp()``, ``duration()`` and ``+`` already cover "+30 minutes":
``now() + duration('30m')``; CEL durations stop at hours, hence ``days(n)``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import TradeflowError
from engine.expressions.scan import BUILTIN_FUNCTIONS, COMPREHENSIONS, KEYWORDS, ROOTS, TYPE_NAMES

log = logging.getLogger(__name__)

_FUNCTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class _Function:
    fn: Callable[..., Any]
    doc: str
    scoped: bool  # fn(now) returns the callable, once per evaluation
    #: Its result depends on its arguments only: an expression calling it may be answered from memory.
    pure: bool = False


_functions: dict[str, _Function] = {}
#: Bumped whenever a function is registered: what an expression remembered before no longer counts.
_generation = [0]


def generation() -> int:
    """A number that changes whenever a function is registered (or replaced)."""
    return _generation[0]


def register_function(name: str, fn: Callable[..., Any], *, doc: str = "", pure: bool = False) -> None:
    """Make ``fn`` callable from expressions as ``name(...)`` (plugins add domain functions).

    ``fn`` receives CEL values as Python values (timestamps as tz-aware ``datetime``,
    durations as ``timedelta``) and returns one (a ``datetime`` with a fixed UTC offset, a
    ``timedelta``, JSON values). Registering a name again replaces the function.

    ``pure=True`` says its result depends on its arguments only (a calendar, arithmetic; not a
    clock, a file or a database that may change): an expression whose functions are all pure
    gives the same result for the same values it reads, and remembers a few recent results
    (:meth:`engine.expressions.cel.Expression.evaluate_raw`).
    """
    if not _FUNCTION_NAME.match(name):
        raise ValueError(f"invalid function name {name!r}: use letters, digits and underscores")
    if name in BUILTIN_FUNCTIONS or name in COMPREHENSIONS or name in ROOTS or name in TYPE_NAMES:
        raise ValueError(f"{name!r} is a CEL built-in or a root and cannot be registered")
    if name in KEYWORDS or name == "has":
        raise ValueError(f"{name!r} is a CEL keyword")
    if not callable(fn):
        raise TypeError(f"register_function({name!r}, ...): {fn!r} is not callable")
    previous = _functions.get(name)
    if previous is not None and previous.fn is not fn:
        if previous.scoped:
            raise TradeflowError(f"{name!r} is an engine built-in and cannot be replaced")
        log.info("expression function %r replaced", name)
    function = _Function(fn, doc or (fn.__doc__ or "").strip().split("\n")[0], scoped=False, pure=pure)
    if function != previous:  # registering the same function again changes nothing
        _functions[name] = function
        _generation[0] += 1


def registered_functions() -> dict[str, str]:
    """Every registered function (engine built-ins included) with its one-line doc."""
    return {name: f.doc for name, f in sorted(_functions.items())}


def lookup(name: str) -> _Function | None:
    """The registered function ``name``, if any."""
    return _functions.get(name)


def _register_scoped(name: str, factory: Callable[[datetime], Callable[..., Any]], doc: str) -> None:
    _functions[name] = _Function(factory, doc, scoped=True)
    _generation[0] += 1


def _zone(name: Any) -> ZoneInfo:
    if not isinstance(name, str):
        raise ValueError(f"time zone must be a string such as 'America/Toronto', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as 'America/Toronto')") from None


def _fixed_offset(moment: datetime) -> datetime:
    """The same instant with a fixed-offset tzinfo (CEL cannot take ZoneInfo datetimes)."""
    offset = moment.utcoffset()
    assert offset is not None
    return moment.replace(tzinfo=timezone(offset))


def at(day: Any, wall_time: Any, tz: Any) -> datetime:
    """The instant of local time ``wall_time`` ('HH:MM' or 'HH:MM:SS') on ``day`` in zone ``tz``.

    A local time that does not exist (the spring-forward gap) moves forward by the gap; an
    ambiguous one (fall back) is its first occurrence.
    """
    zone = _zone(tz)
    if not isinstance(day, str):
        raise ValueError(f"at(): the date must be a 'YYYY-MM-DD' string, got {day!r}")
    try:
        the_day = date.fromisoformat(day)
    except ValueError:
        raise ValueError(f"at(): {day!r} is not a 'YYYY-MM-DD' date") from None
    if not isinstance(wall_time, str) or not re.fullmatch(r"\d\d:\d\d(:\d\d)?", wall_time):
        raise ValueError(f"at(): the time must be 'HH:MM' or 'HH:MM:SS', got {wall_time!r}")
    try:
        clock = time.fromisoformat(wall_time)
    except ValueError:
        raise ValueError(f"at(): {wall_time!r} is not a valid time of day") from None
    local = datetime.combine(the_day, clock, tzinfo=zone)
    return _fixed_offset(local.astimezone(UTC).astimezone(zone))


def date_of(moment: Any, tz: Any) -> str:
    """The calendar date ('YYYY-MM-DD') of timestamp ``moment`` in zone ``tz``."""
    zone = _zone(tz)
    if not isinstance(moment, datetime):
        raise ValueError(f"date_of(): expected a timestamp, got {moment!r}")
    return moment.astimezone(zone).date().isoformat()


def days(n: Any) -> timedelta:
    """A duration of ``n`` days (CEL duration strings stop at hours)."""
    if isinstance(n, bool) or not isinstance(n, int | float) or not math.isfinite(n) or abs(n) > 36_500:
        raise ValueError(f"days(): expected a number of days up to 36500, got {n!r}")
    return timedelta(days=n)


def _now_factory(now: datetime) -> Callable[[], datetime]:
    moment = now.astimezone(UTC)
    return lambda: moment


_register_scoped("now", _now_factory, "now(): the current time of the step, a UTC timestamp")
register_function("at", at, pure=True,
                  doc="at(date, 'HH:MM', tz): the timestamp of that local wall time on that date")
register_function("date_of", date_of, pure=True,
                  doc="date_of(timestamp, tz): the 'YYYY-MM-DD' date in that zone")
register_function("days", days, pure=True, doc="days(n): a duration of n days")
