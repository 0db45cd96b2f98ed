"""Failed-login slowdown per username and client address, recorded in Redis.

The first ``free`` failures cost nothing; after that each attempt must wait
``base * 2 ** (failures - free)`` seconds (capped at ``maximum``) after the last failure, and
an attempt inside that window is refused without checking the password (HTTP 429). A
success clears the record; records expire a day after the last failure. Time comes from an
injected clock, so tests are deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from console.errors import TooManyAttempts
from console.keys import ConsoleKeys

DAY = 86400


class LoginThrottle:
    """Counts failed logins per (username, address) and says how long the next one must wait."""

    def __init__(self, client: Any, keys: ConsoleKeys, *, free: int = 3, base: float = 2.0,
                 maximum: float = 900.0, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.keys = keys
        self.free = free
        self.base = base
        self.maximum = maximum
        self.clock = clock

    def delay(self, failures: int) -> float:
        """Seconds to wait after the last of ``failures`` failures."""
        if failures < self.free:
            return 0.0
        return min(self.base * 2 ** (failures - self.free), self.maximum)

    def check(self, username: str, address: str) -> None:
        """Raise TooManyAttempts while this username and address must still wait."""
        raw = self.client.hgetall(self.keys.login_failures(username, address))
        if not raw:
            return
        failures = int(raw.get(b"count", raw.get("count", 0)))
        last = float(raw.get(b"last", raw.get("last", 0)))
        wait = last + self.delay(failures) - self.clock()
        if wait > 0:
            raise TooManyAttempts(wait)

    def failed(self, username: str, address: str) -> int:
        """Record a failure; returns the number of failures so far."""
        key = self.keys.login_failures(username, address)
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(key, "count", 1)
        pipe.hset(key, "last", repr(self.clock()))
        pipe.expire(key, DAY)
        return int(pipe.execute()[0])

    def succeeded(self, username: str, address: str) -> None:
        """Forget the failures of this username and address."""
        self.client.delete(self.keys.login_failures(username, address))
