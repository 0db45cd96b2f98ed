"""Login throttle: every attempt is counted, per user name and per client address, before the
password is checked (one Lua script in Redis, ``lua/login_attempt.lua``).

The first ``free`` attempts of a user name cost nothing; after that each attempt must come
``base * 2 ** (attempts - free)`` seconds (capped at ``maximum``) after the last counted one.
The client address has its own, larger allowance (``address_free``), so one address cannot
walk through many user names. An attempt inside a waiting period is refused without checking
the password (HTTP 429 with ``Retry-After``) and is not counted. Check and count are one atomic
step: twenty parallel attempts cannot all reach the password check.

A successful login clears the user name's record and gives the address its attempt back (a
colleague's correct password does not use up the office's allowance). Records expire a day
after the last counted attempt. Time comes from an injected clock, so tests are deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from console.console_keys import ConsoleKeys
from console.errors import TooManyAttempts
from engine.keyspace import read_lua

LUA = read_lua(__file__, "login_attempt.lua")


class LoginThrottle:
    """Counts login attempts per user name and per address and refuses those that come too soon."""

    def __init__(self, client: Any, keys: ConsoleKeys, *, free: int = 3, base: float = 2.0,
                 maximum: float = 900.0, address_free: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.keys = keys
        self.free = free
        self.address_free = address_free if address_free is not None else free * 10
        self.base = base
        self.maximum = maximum
        self.clock = clock
        self._attempt = client.register_script(LUA)

    def delay(self, attempts: int, free: int | None = None) -> float:
        """Seconds the next attempt must wait after the last of ``attempts`` counted ones."""
        free = self.free if free is None else free
        if attempts < free:
            return 0.0
        return min(self.base * 2 ** (attempts - free), self.maximum)

    def attempt(self, username: str, address: str) -> None:
        """Count one attempt of ``username`` from ``address``; TooManyAttempts (nothing counted) when
        either must still wait. Call it before checking the password."""
        keys = [self.keys.login_user(username), self.keys.login_address(address)]
        args: list[Any] = [repr(self.clock())]
        for free in (self.free, self.address_free):
            args += [free, repr(self.base), repr(self.maximum)]
        wait = float(self._attempt(keys=keys, args=args))
        if wait > 0:
            raise TooManyAttempts(wait)

    def succeeded(self, username: str, address: str) -> None:
        """A correct password: forget the user name's attempts, give the address its attempt back."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.login_user(username))
        pipe.hincrby(self.keys.login_address(address), "count", -1)
        pipe.expire(self.keys.login_address(address), 86400)
        pipe.execute()
