"""Every Redis key of the console, built in one place, under ``<engine key prefix>:console``,
with the :class:`engine.keyspace.KeySpace` every Redis store of tradeflow uses."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from engine.keyspace import KeySpace


@dataclass(frozen=True)
class ConsoleKeys:
    """Key builders of the console's own data (users, tokens, sessions, login attempts, burn-down samples)."""

    prefix: str = "wf:console"
    space: KeySpace = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "space", KeySpace(f"{self.prefix}:"))

    @classmethod
    def under(cls, engine_prefix: str) -> ConsoleKeys:
        """The console's keys beside an engine's (``wf`` -> ``wf:console:...``)."""
        return cls(KeySpace(f"{engine_prefix}:").key("console"))

    @property
    def users(self) -> str:
        """Hash: user name -> JSON {role, password hash, created_at}."""
        return self.space.key("users")

    @property
    def tokens(self) -> str:
        """Hash: SHA-256 of an API token -> JSON {user, label, created_at}."""
        return self.space.key("tokens")

    def login_user(self, username: str) -> str:
        """Hash {count, last} of the login attempts of one user name (expires a day after the last)."""
        return self.space.key("login", "user", _digest(username))

    def login_address(self, address: str) -> str:
        """Hash {count, last} of the login attempts from one client address (expires a day after the last)."""
        return self.space.key("login", "address", _digest(address))

    def sessions(self, username: str) -> str:
        """Hash: session id -> expiry (epoch seconds) of one user's signed-in sessions."""
        return self.space.key("sessions", _digest(username))

    def burndown(self, run: str) -> str:
        """List of JSON samples [time, remaining, finished] of a run, oldest first."""
        return self.space.key("burndown", run)

    @property
    def steps_samples(self) -> str:
        """List of JSON samples [time, steps applied so far] of the whole fleet."""
        return self.space.key("steps")


def _digest(text: str) -> str:
    """A fixed-size, key-safe stand-in for a name typed by a user."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]
