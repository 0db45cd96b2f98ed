"""Shared limits: rate buckets and concurrency pools, one operation of ``lua/limits.lua`` each.

The buckets and pools are not instance state: a step that is over its limit is parked by the
``hold`` operation of ``lua/state.lua`` (:meth:`engine.store.instances.Instances.hold`); this
module only says whether it may go, and keeps the lines of the parked ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from engine.keyspace import read_lua
from engine.store.codec import dumps, text
from engine.store.keys import Keys


def limits_script(client: redis.Redis) -> Any:
    """``lua/limits.lua`` registered on ``client``."""
    return client.register_script(read_lua(__file__, "limits.lua"))


@dataclass(frozen=True)
class Verdict:
    """May the step go? If not, for how long it parks (rate) or where it stands in line (concurrency)."""

    ok: bool
    wait_seconds: float = 0.0
    position: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class LimitState:
    """One limit as it stands: its settings, calls allowed now, parked instances, slot holders."""

    name: str
    kind: str
    per_second: float | None
    burst: int | None
    max: int | None
    tokens: int
    parked: int
    holders: int
    waits: int
    override: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view (``tradeflow limits --json``, the console's API)."""
        return dict(self.__dict__)


class Limits:
    """The limits half of :class:`engine.store.redis_store.RedisStore`."""

    client: redis.Redis
    keys: Keys
    _limits: Any
    #: The buckets' clock: None (always, in a deployment) is Redis's own TIME, which every worker
    #: agrees on; a test sets a clock of its own (e.g. ``engine.clock.ManualClock``) so that its
    #: verdicts never depend on how fast the machine runs.
    limit_clock: Callable[[], float] | None = None

    def _limit(self, op: str, name: str, **fields: Any) -> Any:
        doc = {"op": op, "prefix": self.keys.limits_prefix, "name": name,
               **{k: v for k, v in fields.items() if v is not None}}
        if self.limit_clock is not None:
            doc["now"] = self.limit_clock()
        return self._limits(keys=[], args=[dumps(doc)])

    def limit_rate(self, name: str, instance_id: str, per_second: float, burst: int, cost: int = 1) -> Verdict:
        """May ``instance_id`` make ``cost`` calls under rate limit ``name`` now (an override of ``name`` wins)?"""
        reply = [text(x) for x in self._limit("rate", name, id=instance_id, per_second=per_second, burst=burst,
                                              cost=max(1, int(cost)),
                                              spec={"kind": "rate", "per_second": per_second, "burst": burst})]
        if reply[0] == "ok":
            return Verdict(True, tokens=int(reply[1]))
        return Verdict(False, wait_seconds=float(reply[1]), tokens=int(reply[2]))

    def limit_acquire(self, name: str, instance_id: str, seq: int, maximum: int) -> Verdict:
        """Take (or keep) a slot of pool ``name`` for ``instance_id`` at step ``seq``, else join its line."""
        reply = [text(x) for x in self._limit("acquire", name, id=instance_id, seq=seq, max=maximum,
                                              spec={"kind": "concurrency", "max": maximum})]
        if reply[0] == "ok":
            return Verdict(True)
        return Verdict(False, position=int(reply[1]))

    def limit_release(self, name: str, instance_id: str, maximum: int) -> list[str]:
        """``instance_id`` leaves pool ``name``; the ids at the head of its line that may take a slot now."""
        return [text(x) for x in self._limit("release", name, id=instance_id, max=maximum)]

    def limit_leave(self, kind: str, name: str, instance_id: str) -> None:
        """Drop ``instance_id`` from the line of limit ``name`` (``kind``: "rate" or "conc")."""
        self._limit("leave", name, id=instance_id, kind=kind)

    def limit_set(self, name: str, value: dict[str, Any]) -> None:
        """Override limit ``name`` at run time: ``{"per_second", "burst"}`` or ``{"max"}`` (no publish needed)."""
        self._limit("set", name, value=value)

    def limit_clear(self, name: str) -> None:
        """Drop the run-time override of ``name``: the definitions' settings apply again."""
        self._limit("clear", name)

    def limit_wake(self, at: float, now: float) -> bool:
        """Is an early wake of the timers at ``at`` (``now``: the caller's clock) to be sent? True when none
        is on its way for ``at`` or earlier: it is marked as on its way, and the caller sends it."""
        return bool(self._limit("wake", "", at=at, wall=now))

    def limit_woke(self, now: float, slack: float = 0.0) -> None:
        """An early wake ran at ``now``: drop the mark of the one due by then (or ``slack`` seconds later:
        another machine's clock), so the next can be asked for."""
        self._limit("woke", "", wall=now, slack=slack)

    def limit_forget(self, age_seconds: float, limit: int = 1000) -> int:
        """Drop the limit names unused for ``age_seconds`` that hold nothing (no override, slot or line),
        with their wait counters and settings, at most ``limit`` a call; how many."""
        return int(self._limit("forget", "", age=age_seconds, limit=limit))

    def limit_names(self) -> list[str]:
        """Every limit name used or set, most recently used first."""
        return [text(x) for x in self.client.zrevrange(self.keys.limits_prefix + "names", 0, -1)]

    def limit_states(self, names: list[str] | None = None) -> list[LimitState]:
        """How each limit of ``names`` (default: all) stands now."""
        names = self.limit_names() if names is None else names
        if not names:
            return []
        rows = json.loads(text(self._limit("show", "", names=names)))
        rows = rows if isinstance(rows, list) else []
        return [LimitState(name=r["name"], kind=r.get("kind") or "unknown", per_second=r.get("per_second"),
                           burst=r.get("burst"), max=r.get("max"), tokens=int(r.get("tokens") or 0),
                           parked=int(r.get("parked") or 0), holders=int(r.get("holders") or 0),
                           waits=int(r.get("waits") or 0), override=bool(r.get("override")))
                for r in rows]

    def limit_pools(self, count: int = 100) -> list[str]:
        """Up to ``count`` concurrency pools that have holders or a line (the sweeper checks them)."""
        return [text(x) for x in self.client.srandmember(self.keys.limits_prefix + "pools", count) or []]

    def limit_holders(self, name: str) -> dict[str, int]:
        """The holders of pool ``name``: instance id -> the step seq it took its slot at."""
        raw = self.client.hgetall(f"{self.keys.limits_prefix}conc:{name}:holders")
        return {text(k): int(v) for k, v in raw.items()}

    def limit_line(self, kind: str, name: str, before: float | None = None) -> list[str]:
        """The ids in the line of limit ``name`` (``kind`` "rate" or "conc"); rate: only those due before ``before``."""
        key = f"{self.keys.limits_prefix}{kind}:{name}:line"
        if before is None:
            return [text(x) for x in self.client.zrange(key, 0, -1)]
        return [text(x) for x in self.client.zrangebyscore(key, "-inf", before)]

    def run_limited(self, run: str) -> dict[str, int]:
        """How many instances of ``run`` wait for each limit now (reason -> count; zeros left out)."""
        raw = self.client.hgetall(self.keys.run_limited(run))
        return {text(k): int(v) for k, v in raw.items() if int(v) > 0}
