"""Clocks: the system one, one a test moves by hand, and one shifted by an offset file.

``TRADEFLOW_CLOCK_OFFSET_FILE`` gives worker processes the offset clock, so a rehearsal or
a fault test can make waits of days pass in seconds across real processes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from engine.errors import ConfigurationError


class Clock(Protocol):
    """A source of the current time in epoch seconds."""

    def __call__(self) -> float: ...


#: The wall clock: ``time.time`` itself (a clock is called several times per step; no wrapper frame).
system_clock: Clock = time.time


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


class OffsetFileClock:
    """The wall clock plus an offset in seconds read from a file (rehearsals and fault tests).

    The file holds one number (``259200`` moves every process three days ahead). It is
    re-read at most once per ``refresh`` seconds, so a test or an operator can move the
    clock of running workers by rewriting it. A missing or empty file means no offset;
    anything else that is not a number is an error, said once per read.
    """

    def __init__(self, path: Path, refresh: float = 1.0) -> None:
        self.path = path
        self.refresh = refresh
        self._offset = 0.0
        self._read_at = float("-inf")

    def offset(self) -> float:
        """The current offset in seconds (cached for ``refresh`` seconds)."""
        mono = time.monotonic()
        if mono - self._read_at >= self.refresh:
            self._offset = read_offset(self.path)
            self._read_at = mono
        return self._offset

    def __call__(self) -> float:
        return time.time() + self.offset()


def read_offset(path: Path) -> float:
    """The offset a clock file holds; 0 when the file is missing or empty."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return 0.0
    if not text:
        return 0.0
    try:
        return float(text)
    except ValueError as exc:
        raise ConfigurationError(f"{path}: clock offset must be a number of seconds, got {text[:40]!r}") from exc


def make_clock(offset_file: Path | None) -> Clock:
    """The clock processes use: the wall clock, or the wall clock plus the offset in ``offset_file``."""
    return system_clock if offset_file is None else OffsetFileClock(offset_file)
