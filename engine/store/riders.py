"""Riders: commands sent in the same round trip as a step's last change, instead of one trip each.

A worker draining a deep queue knows, while a step runs, what it will do right after it: start
the next step it took and take the one after. Those commands ride along the step's final
change (its compare-and-set, :meth:`engine.store.instances.Instances.advance`): one pipelined
round trip, the change first, so Redis runs them in that order and each exactly as alone.

A rider builds its command when it is sent (a start's ``now`` is the moment the step before it
ended, right before the next one runs: its timeout counts from its real start) and is told its
reply, or the error that command alone raised. A script the server does not know (a restart, a
failover) is loaded and that command alone is sent again, in order (a command that ran the
first time ran where it was sent: riders must not depend on the change before them having run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import NoScriptError

from engine.connections import PinnedCalls


@dataclass
class Rider:
    """One command sent after a change in its round trip."""

    #: Builds the command at sending time: ``("EVALSHA", sha, numkeys, *keys, *args)`` or any command.
    command: Callable[[], tuple[Any, ...]]
    #: Told the command's reply (an exception instance when that command failed).
    landed: Callable[[Any], None]
    #: The registered script of an EVALSHA (loaded on NOSCRIPT), None for a plain command.
    script: Any = None


def evalsha(script: Any, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
    """The EVALSHA command of registered ``script`` on ``keys`` and ``args``."""
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


def send_with_riders(client: redis.Redis | PinnedCalls, first: tuple[Any, ...], script: Any,
                     riders: Sequence[Rider]) -> Any:
    """Send ``first`` (an EVALSHA of ``script``) then each rider's command in one pipelined round trip.

    Returns ``first``'s reply (raising its error); each rider is told its own reply. A command
    answered NOSCRIPT is sent again alone once its script is loaded (in order: the change first).
    """
    [reply] = send_all_with_riders(client, [(first, script)], riders)
    if isinstance(reply, Exception):
        raise reply
    return reply


def send_all_with_riders(client: redis.Redis | PinnedCalls, changes: Sequence[tuple[tuple[Any, ...], Any]],
                         riders: Sequence[Rider]) -> list[Any]:
    """Send ``changes`` (each a command and its registered script, as :func:`pipelined` takes them), then
    each rider's command, in one pipelined round trip; the changes' replies (an error as the exception
    instance), each rider told its own."""
    replies = pipelined(client, [*changes, *((rider.command(), rider.script) for rider in riders)])
    for rider, reply in zip(riders, replies[len(changes):], strict=True):
        rider.landed(reply)
    return replies[:len(changes)]


def pipelined(client: redis.Redis | PinnedCalls, commands: Sequence[tuple[tuple[Any, ...], Any]]) -> list[Any]:
    """Send ``commands`` (each a command and, for an EVALSHA, its registered script) in one pipelined
    round trip, in order; their replies, an error as the exception instance. A command answered
    NOSCRIPT is sent again alone once its script is loaded (a restart, a failover). ``client``: the
    store's :class:`engine.connections.PinnedCalls`, or a client used as it is."""
    calls = client if isinstance(client, PinnedCalls) else PinnedCalls(client, pin=False)
    replies = calls.pipeline([command for command, _ in commands])
    for i, (command, loaded) in enumerate(commands):
        if isinstance(replies[i], NoScriptError) and loaded is not None:
            calls.client.script_load(loaded.script)
            try:
                replies[i] = calls.execute(*command)
            except redis.ResponseError as exc:
                replies[i] = exc
    return replies


__all__ = ["Rider", "evalsha", "pipelined", "send_all_with_riders", "send_with_riders"]
