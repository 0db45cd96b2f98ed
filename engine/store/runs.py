"""Runs (their status sets and metadata), the timer and deadline indexes, and the epoch sentinel."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import redis

from engine.errors import DataSetLost
from engine.instance import InstanceStatus
from engine.keyspace import read_lua
from engine.store.codec import text
from engine.store.keys import Keys


def claim_script(client: redis.Redis) -> Any:
    """``lua/claim.lua`` registered on ``client``."""
    return client.register_script(read_lua(__file__, "claim.lua"))


class Runs:
    """The run, index and epoch part of :class:`engine.store.redis_store.RedisStore`."""

    client: redis.Redis
    keys: Keys
    _claim: Any

    # -- runs --------------------------------------------------------------------------------

    def touch_run(self, run: str, meta: dict[str, Any]) -> None:
        """Record a run's label (first call wins for created_at) and add to its metadata.

        The metadata loses any TTL it had (a run that finished is started again): it gets one
        when its last instance finishes (``lua/state.lua``) or from the housekeeping.
        """
        now = time.time()
        pipe = self.client.pipeline(transaction=True)  # the label and its metadata appear together
        pipe.zadd(self.keys.runs, {run: now}, nx=True)
        pipe.hsetnx(self.keys.run_meta(run), "created_at", str(now))
        for key, value in meta.items():
            if key == "total":
                pipe.hincrby(self.keys.run_meta(run), "total", int(value))
            else:
                pipe.hset(self.keys.run_meta(run), key, str(value))
        pipe.persist(self.keys.run_meta(run))
        pipe.execute()

    def run_counts(self, run: str) -> dict[str, int]:
        """How many instances of ``run`` are in each status (exact: read from the status sets)."""
        pipe = self.client.pipeline(transaction=False)
        for status in InstanceStatus:
            pipe.scard(self.keys.run_status(run, status.value))
        return {s.value: int(n) for s, n in zip(InstanceStatus, pipe.execute(), strict=True)}

    def run_meta(self, run: str) -> dict[str, str]:
        """The run's metadata hash (created_at, total, workflows...)."""
        return {text(k): text(v) for k, v in self.client.hgetall(self.keys.run_meta(run)).items()}

    def runs(self, limit: int = 50, offset: int = 0) -> list[str]:
        """Run labels, newest first: ``limit`` of them from the ``offset``-th."""
        return [text(r) for r in self.client.zrevrange(self.keys.runs, offset, offset + limit - 1)]

    def run_ids(self, run: str, statuses: Iterable[InstanceStatus] | None = None) -> list[str]:
        """Ids of the instances of ``run`` in any of ``statuses`` (all statuses when None)."""
        keys = [self.keys.run_status(run, s.value) for s in (statuses or InstanceStatus)]
        return sorted(text(i) for i in self.client.sunion(keys)) if keys else []

    def iter_run_ids(self, run: str, status: InstanceStatus, batch: int = 1000) -> Iterator[str]:
        """Ids of ``run`` in ``status``, scanned in batches (for big runs)."""
        for iid in self.client.sscan_iter(self.keys.run_status(run, status.value), count=batch):
            yield text(iid)

    # -- timers and deadlines ----------------------------------------------------------------

    def claim_due_timers(self, now: float, limit: int, lease_seconds: float) -> list[tuple[str, float]]:
        """Lease the timers due at ``now`` (waits and retry backoffs): [(id, due time)]."""
        return self._claim_due(self.keys.timers, now, limit, lease_seconds)

    def claim_overdue(self, now: float, limit: int, lease_seconds: float) -> list[tuple[str, float]]:
        """Lease the instances whose in-flight step passed its deadline: [(id, deadline)]."""
        return self._claim_due(self.keys.deadlines, now, limit, lease_seconds)

    def _claim_due(self, key: str, now: float, limit: int, lease: float) -> list[tuple[str, float]]:
        flat = self._claim(keys=[key], args=[repr(now), str(limit), repr(now + lease)])
        return [(text(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]

    def next_timer(self) -> float | None:
        """When the earliest timer is due, if any."""
        first = self.client.zrange(self.keys.timers, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    # -- epoch sentinel ----------------------------------------------------------------------

    def ensure_epoch(self) -> str:
        """The data set's epoch: a random token written the first time any process asks.

        A process remembers it and passes it to :meth:`check_epoch` later: a Redis restarted
        empty (or swapped for another) has lost or changed it.
        """
        self.client.set(self.keys.epoch, uuid.uuid4().hex, nx=True)
        return text(self.client.get(self.keys.epoch))

    def check_epoch(self, expected: str) -> None:
        """Raise :class:`DataSetLost` unless the data set's epoch is still ``expected``.

        It never writes: a process that knew the old data set does not adopt a new one.
        """
        epoch = self.client.get(self.keys.epoch)
        if epoch is None or text(epoch) != expected:
            found = "gone" if epoch is None else f"now {text(epoch)}"
            raise DataSetLost(
                f"Redis lost tradeflow's data: epoch {expected} is {found} (Redis restarted empty or was "
                "replaced). Instances in flight are gone. Restore Redis from its AOF/RDB and restart the "
                "workers; or restart the workers to accept the empty data set and start the run again "
                "(see the runbook, docs/runbook.md)."
            )
