"""Debian's chromium (never a downloaded browser), headless, driven by Playwright, for the console's
browser tests: one per test module, a fresh context per sign-in."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: Argon2id at its lowest cost for the test consoles (``TRADEFLOW_CONSOLE_ARGON2_*``, see console/config.py):
#: their sign-ins are many and their passwords guard nothing; the default cost is checked in tests/unit/console.
CHEAP_ARGON2_ENV = {"TRADEFLOW_CONSOLE_ARGON2_TIME_COST": "1", "TRADEFLOW_CONSOLE_ARGON2_MEMORY_KIB": "1024",
                    "TRADEFLOW_CONSOLE_ARGON2_PARALLELISM": "1"}


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        return f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)"
    return None


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """Debian's chromium, headless, driven by playwright; closed on the way out."""
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
