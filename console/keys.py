"""Every Redis key of the console, built in one place, under ``<engine key prefix>:console``,
with the :class:`engine.keyspace.KeySpace` every Redis store of tradeflow uses."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from engine.keyspace import KeySpace


@dataclass(frozen=True)
class ConsoleKeys:
    """Key builders of the console's own data (users, tokens, login failures, burn-down samples)."""

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

    def login_failures(self, username: str, address: str) -> str:
        """Hash {count, last} of failed logins of one username from one address (expires after a day)."""
        digest = hashlib.sha256(f"{username}\0{address}".encode()).hexdigest()[:32]
        return self.space.key("login", digest)

    def burndown(self, run: str) -> str:
        """List of JSON samples [time, remaining, finished] of a run, oldest first."""
        return self.space.key("burndown", run)

    @property
    def steps_samples(self) -> str:
        """List of JSON samples [time, steps applied so far] of the whole fleet."""
        return self.space.key("steps")
