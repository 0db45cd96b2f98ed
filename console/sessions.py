"""Server-side sessions: the signed cookie carries a session id, Redis says whether it is alive.

Every signed-in browser has a random session id, kept in a hash per user
(``session id -> expiry``). A request is let in only while its id is in its user's hash and
unexpired, so:

- logging out deletes that session at once (a saved copy of the cookie is dead);
- a password change (re-adding the user) or removing the user deletes every session of theirs;
- a session ends after ``TRADEFLOW_CONSOLE_SESSION_HOURS`` whatever the cookie says.

The cookie itself stays signed (it also carries the CSRF token), but a signature alone no longer
keeps a session alive.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from console.console_keys import ConsoleKeys
from engine.keyspace import text


class SessionStore:
    """The live sessions of every console user, in Redis under the console's keys."""

    def __init__(self, client: Any, keys: ConsoleKeys, hours: float = 12.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.keys = keys
        self.seconds = hours * 3600
        self.clock = clock

    def start(self, user: str) -> str:
        """A new session of ``user``: its id (put it in the cookie). Expired ones of theirs are dropped."""
        sid = secrets.token_urlsafe(24)
        key = self.keys.sessions(user)
        now = self.clock()
        stale = [s for s, until in self.client.hgetall(key).items() if float(until) <= now]
        pipe = self.client.pipeline(transaction=True)
        if stale:
            pipe.hdel(key, *stale)
        pipe.hset(key, sid, repr(now + self.seconds))
        pipe.expire(key, int(self.seconds) + 60)
        pipe.execute()
        return sid

    def alive(self, user: str, sid: str | None) -> bool:
        """True while session ``sid`` of ``user`` has not ended (logout, password change, removal, expiry)."""
        if not sid:
            return False
        until = self.client.hget(self.keys.sessions(user), sid)
        return until is not None and float(text(until)) > self.clock()

    def end(self, user: str, sid: str | None) -> None:
        """End one session (logout)."""
        if sid:
            self.client.hdel(self.keys.sessions(user), sid)

    def end_all(self, user: str) -> int:
        """End every session of ``user`` (password change, removal); returns how many were live."""
        key = self.keys.sessions(user)
        pipe = self.client.pipeline(transaction=True)
        pipe.hlen(key)
        pipe.delete(key)
        return int(pipe.execute()[0])
