"""Liveness marks of worker processes, and the started steps the sweeper checks them against.

A worker process keeps a mark (``<prefix>:alive:<host>:<pid>``) that expires a few seconds
after its last refresh; a started step records which process started it (the instance's
``carrier``, ``node:seq:attempt@host:pid``, written by the ``start`` operation of
``lua/state.lua``). See :mod:`engine.runtime.concerns.liveness`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import redis

from engine.instance import InstanceStatus
from engine.store.codec import text
from engine.store.keys import Keys


@dataclass(frozen=True)
class StartedStep:
    """An instance holding a started step: where it stands and which process carries it."""

    id: str
    status: InstanceStatus
    node: str
    seq: int
    attempt: int
    carrier: str | None


class Marks:
    """The liveness part of :class:`engine.store.redis_store.RedisStore`."""

    client: redis.Redis
    keys: Keys

    def mark_alive(self, process: str, seconds: float) -> None:
        """Set (or refresh) the liveness mark of ``process`` (``host:pid``) for ``seconds``."""
        self.client.set(self.keys.alive(process), "1", px=max(1, int(seconds * 1000)))

    def alive(self, processes: Iterable[str]) -> dict[str, bool]:
        """For each of ``processes``, whether its liveness mark is set (one pipelined read)."""
        names = sorted(set(processes))
        if not names:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.exists(self.keys.alive(name))
        return {name: bool(found) for name, found in zip(names, pipe.execute(), strict=True)}

    def started_steps(self, limit: int) -> list[StartedStep]:
        """Up to ``limit`` instances holding a started step (the deadline index, earliest first), with their
        carriers: two round trips, whatever the number."""
        ids = [text(member) for member in self.client.zrange(self.keys.deadlines, 0, limit - 1)]
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for iid in ids:
            pipe.hmget(self.keys.instance(iid), "status", "node", "seq", "attempt", "carrier")
        out = []
        for iid, (status, node, seq, attempt, carrier) in zip(ids, pipe.execute(), strict=True):
            if status is not None:
                out.append(StartedStep(iid, InstanceStatus(text(status)), text(node), int(seq), int(attempt or 1),
                                       text(carrier) if carrier else None))
        return out

    def uptime(self) -> float | None:
        """Seconds since this Redis started (None when it cannot be asked: ``INFO`` refused or missing)."""
        try:
            return float(self.client.info("server")["uptime_in_seconds"])
        except (redis.ResponseError, KeyError, TypeError, ValueError):
            return None


__all__ = ["Marks", "StartedStep"]
