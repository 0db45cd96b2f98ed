"""Who acts: a :class:`Principal` (a name and roles), given by the authenticated caller.

The engine never reads who sent a signal or took an operator action from the data it carries:
the caller (the console's session user, an API token's user, the CLI's configured identity)
says who it is, and the engine records that name and those roles.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Principal:
    """Who acts: a name and roles, given by the authenticated caller, never read from data."""

    name: str
    roles: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("a principal has a non-empty name")
        if isinstance(self.roles, str):  # Principal("ann", "pm") means one role, not three letters
            raise TypeError(f"roles is a set of role names, got the string {self.roles!r}: write {{{self.roles!r}}}")
        object.__setattr__(self, "roles", frozenset(self.roles))

    @classmethod
    def of(cls, name: str, roles: Iterable[str] = ()) -> Principal:
        """A principal named ``name`` with ``roles`` (any iterable of role names)."""
        return cls(name, frozenset(roles))

    def has(self, role: str) -> bool:
        """True when this principal holds ``role``."""
        return role in self.roles

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "roles": [sorted]}`` (what the history and the audit log keep)."""
        return {"name": self.name, "roles": sorted(self.roles)}

    def __str__(self) -> str:
        return f"{self.name} ({', '.join(sorted(self.roles)) or 'no role'})"
