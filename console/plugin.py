"""The console's hook into the ``tradeflow`` CLI (entry point ``tradeflow.plugins``): adds ``console``
and declares the console users' roles (the roles a definition's signals may name)."""

from __future__ import annotations

from typing import Any

#: The roles of console users (:class:`console.users.Role`), declared to the engine (hook ``roles``).
ROLES = ("viewer", "operator", "pm", "admin")


def register(cli: Any | None = None) -> dict[str, Any]:
    """Add the ``console`` command group to ``cli`` (when given); declare the users' roles."""
    if cli is not None:
        from console.cli import console

        if "console" not in cli.commands:
            cli.add_command(console)
    return {"roles": list(ROLES)}
