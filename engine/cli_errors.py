"""How every CLI command reports an unreachable Redis (one line on stderr, exit status 75).

Each command declares next to its definition whether running it again after such a failure
is safe (:func:`rerun`); the line says so, from that declaration, never by guessing:

    @main.command()
    @rerun(safe=False, why="it may have started the instance already: look with `tradeflow list --run RUN`")
    def start(...): ...
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import redis
from kombu.exceptions import OperationalError
from rich.console import Console

from engine.cli_context import cli_context
from engine.config import Settings
from engine.connections import masked_url
from engine.errors import RedisUnavailable, TradeflowError

#: Exit status when Redis (or the broker on it) cannot be reached: EX_TEMPFAIL, try again later.
EXIT_UNREACHABLE = 75
#: What "Redis is unreachable" is made of: redis-py's connection errors and timeouts (busy
#: loading its data set included) and kombu's, raised when a message cannot be published.
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OperationalError, RedisUnavailable)

F = TypeVar("F", bound=Callable[..., Any])
_ATTRIBUTE = "__tradeflow_rerun__"


@dataclass(frozen=True)
class Rerun:
    """Whether re-running a command after it failed half-way is safe, and why."""

    safe: bool
    why: str


READ_ONLY = Rerun(True, "it only reads")


def rerun(safe: bool, why: str) -> Callable[[F], F]:
    """Declare on a command's function (below the click decorators) whether re-running it is safe."""

    def mark(fn: F) -> F:
        setattr(fn, _ATTRIBUTE, Rerun(safe, why))
        return fn

    return mark


def read_only(fn: F) -> F:
    """Declare a command that only reads: re-running it is always safe."""
    setattr(fn, _ATTRIBUTE, READ_ONLY)
    return fn


def declared_rerun(command: click.Command | None) -> Rerun | None:
    """The declaration of ``command`` (None when it has none)."""
    return getattr(getattr(command, "callback", None), _ATTRIBUTE, None)


def unreachable_line(group: click.Group, ctx: click.Context, exc: BaseException) -> str:
    """The one line printed when ``exc`` (one of :data:`UNREACHABLE`) ended the subcommand of ``ctx``."""
    name = ctx.invoked_subcommand
    command = group.get_command(ctx, name) if name else None
    path = " ".join(filter(None, [ctx.command_path, name]))
    if isinstance(exc, RedisUnavailable):
        return f"{exc} Nothing was done: re-running `{path}` is safe."
    reason = " ".join(str(exc).split()) or type(exc).__name__
    settings = cli_context(ctx).get(Settings)
    where = f" at {masked_url(settings.redis_url)}" if settings.redis_url_configured else ""
    declared = declared_rerun(command)
    if declared is None:
        advice = f"`{path}` may have done part of its work: check before re-running it."
    elif declared.safe:
        advice = f"Re-running `{path}` is safe ({declared.why})."
    else:
        advice = f"Check before re-running `{path}`: {declared.why}."
    return f"Redis is unreachable{where} ({reason}). {advice}"


class ErrorGroup(click.Group):
    """A command group that turns known errors into one clear line (the CLIs' common root).

    Redis unreachable (at start or half-way): one line saying whether re-running the command is
    safe (from its :func:`rerun` declaration), exit status 75. An error of one of ``known`` (a
    subclass names its package's roots): ``error: <message>`` on one line, exit status 1.
    """

    known: tuple[type[BaseException], ...] = (TradeflowError,)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; report what it raised as described above."""
        try:
            return super().invoke(ctx)
        except UNREACHABLE as exc:
            click.echo(f"error: {unreachable_line(self, ctx, exc)}", err=True)  # never wrapped: one line
            sys.exit(EXIT_UNREACHABLE)
        except self.known as exc:
            self.report(exc)
            sys.exit(1)

    def report(self, exc: BaseException) -> None:
        """Print ``exc`` as one ``error:`` line on standard error."""
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
