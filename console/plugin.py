"""The console's hook into the ``tradeflow`` CLI (entry point ``tradeflow.plugins``): adds ``console``."""

from __future__ import annotations

from typing import Any


def register(cli: Any) -> dict[str, Any]:
    """Add the ``console`` command group to ``cli``."""
    from console.cli import console

    if "console" not in cli.commands:
        cli.add_command(console)
    return {}
