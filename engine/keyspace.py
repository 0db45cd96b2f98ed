"""Key names under one prefix, and Redis replies as text: the helpers every Redis store here uses.

The engine's store (:class:`engine.store.keys.Keys`), the console (:class:`console.console_keys.ConsoleKeys`)
and the portfolio manager's stores (the book, proposals, the simulated brokerage, the demo's
marker) each keep their keys under a prefix of their own, built with one :class:`KeySpace`.
The one exception is the broker's: Celery's queue and unacked keys are kombu's layout, not
ours, and are composed where that layout is owned (``engine/broker/redis_queue.py``).
Every Lua script is read by :func:`read_lua`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class KeySpace:
    """Keys under ``prefix`` (which ends with its separator, e.g. ``"pm:"``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        """``prefix`` + the parts joined by ``:`` (``KeySpace("pm:").key("lots", "a1")`` -> ``pm:lots:a1``)."""
        return self.prefix + ":".join(parts)

    def family(self, name: str) -> str:
        """The SCAN pattern of every key of family ``name`` (``pm:lots:*``)."""
        return self.key(name, "*")

    def __repr__(self) -> str:
        return f"KeySpace({self.prefix!r})"


def text(value: Any) -> str:
    """A Redis reply as a str (replies are bytes unless the client decodes them)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def read_lua(package_file: str, name: str) -> str:
    """The Lua script ``lua/<name>`` next to the module ``package_file`` (its ``__file__``)."""
    return (Path(package_file).parent / "lua" / name).read_text()
