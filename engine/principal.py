"""Who acts on the engine: a principal (name and roles) given by the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Principal:
    """Who acts: a name and roles, given by the authenticated caller, never read from data."""

    name: str
    roles: frozenset[str] = frozenset()

    def has(self, role: str) -> bool:
        """True when the principal holds ``role``."""
        return role in self.roles

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "roles": [sorted]}``."""
        return {"name": self.name, "roles": sorted(self.roles)}
