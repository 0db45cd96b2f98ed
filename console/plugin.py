"""The console's hook into the ``tradeflow`` CLI (entry point ``tradeflow.plugins``): adds ``console``."""

from __future__ import annotations

from typing import Any


def register(cli: Any | None = None) -> dict[str, Any]:
    """Add the ``console`` command group to ``cli`` (when given); the console offers no hooks."""
    if cli is not None:
        from console.cli import console

        if "console" not in cli.commands:
            cli.add_command(console)
    return {}
