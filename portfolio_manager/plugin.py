"""The portfolio manager's hooks into the ``tradeflow`` CLI (entry point ``tradeflow.plugins``)."""

from __future__ import annotations

from typing import Any


def register(cli: Any) -> dict[str, Any]:
    """Add the portfolio manager's commands to ``cli``; return its hooks (fleets, demo)."""
    return {}
