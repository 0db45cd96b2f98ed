"""The demo's console user: ``demo`` (admin), its password from ``TRADEFLOW_DEMO_PASSWORD`` (read
by :class:`console.config.ConsoleSettings`) or generated now; never a password written in the code."""

from __future__ import annotations

import secrets

from console.config import ConsoleSettings
from engine.config import Settings

DEMO_USER = "demo"


def ensure_demo_user(settings: ConsoleSettings, engine_settings: Settings) -> tuple[str, str, bool]:
    """(user, password, generated): the demo admin, (re)created with the chosen password.

    ``settings``, ``engine_settings``: read by the demo, at its edge."""
    from console.app import build_context

    password = settings.demo_password or ""
    generated = not password
    if generated:
        password = secrets.token_urlsafe(12)
    build_context(settings, engine_settings, engine=False).users.add(DEMO_USER, "admin", password)
    return DEMO_USER, password, generated


def console_banner(settings: ConsoleSettings, engine_settings: Settings, host: str = "127.0.0.1",
                   port: int = 8000) -> list[str]:
    """Lines the demo ends with: how to open the console, and as whom."""
    user, password, generated = ensure_demo_user(settings, engine_settings)
    where = "generated for this demo" if generated else "from TRADEFLOW_DEMO_PASSWORD"
    return [f"web console: `tradeflow console` (or `make console`), then open http://{host}:{port}/",
            f"  sign in as {user} / {password}  (admin; password {where})",
            "  with workers running (`make workers`), approvals from the console are submitted by the workflows"]
