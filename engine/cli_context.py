"""What one command-line invocation reads from its environment: built once, carried by click's context object.

The ``tradeflow`` group callback (and each plugin's group callback, for when its group runs on
its own) puts a :class:`CliContext` on click's context object; commands ask it for their
settings (:func:`cli_settings`) instead of reading the environment again. Each settings class
(the engine's :class:`engine.config.Settings`, a plugin's own) is read at most once per
invocation, on first use: a command that needs none (``definitions validate`` of a definition
naming no role) never reads them, and a bad variable is reported only by a command that uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from engine.config import Settings

T = TypeVar("T")


@dataclass
class CliContext:
    """Settings of one invocation, each class read from ``env`` (None: the process environment) once."""

    env: Mapping[str, str] | None = None
    built: dict[type, Any] = field(default_factory=dict)

    def get(self, kind: type[T]) -> T:
        """The ``kind`` settings (a class with ``from_env(env)``), read on first use and kept."""
        if kind not in self.built:
            self.built[kind] = kind.from_env(self.env)  # type: ignore[attr-defined]
        return self.built[kind]


def cli_context(ctx: click.Context | None = None) -> CliContext:
    """The invocation's :class:`CliContext` (``ctx``: default the current click context); made if none yet."""
    return (ctx or click.get_current_context()).ensure_object(CliContext)


def cli_settings(kind: type[T] = Settings) -> T:  # type: ignore[assignment]
    """The current invocation's ``kind`` settings (default: the engine's)."""
    return cli_context().get(kind)


def notice(message: str) -> None:
    """One line on stderr that does not disturb stdout (e.g. "using the embedded Redis")."""
    click.echo(message, err=True)


def cli_engine(allow_start: bool = False) -> Any:
    """The invocation's Engine on its configured (or, with ``allow_start``, embedded) Redis; the
    embedded one is said on stderr. Celery is imported here, by the commands that need an engine,
    not by ``--help``."""
    from engine.app import build_engine

    return build_engine(cli_settings(Settings), allow_start=allow_start, notice=notice)


__all__ = ["CliContext", "cli_context", "cli_engine", "cli_settings", "notice"]
