"""Clocks: the system one, and one a test can move (waits of days in a second)."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of the current time in epoch seconds."""

    def __call__(self) -> float: ...


def system_clock() -> float:
    """The wall clock."""
    return time.time()


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds
