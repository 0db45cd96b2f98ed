"""Queued steps: sent, not yet started -- what the reconciliation reads to find lost messages.

A step joins the ``queued`` set (scored by when it was sent, on the wall clock) when a state
change sends it, and leaves it when a worker starts it (the ``start`` operation of
``lua/state.lua``), or when the instance moves on. See
:meth:`engine.runtime.runner.Runtime.reconcile`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from engine.instance import InstanceStatus
from engine.store.codec import text
from engine.store.keys import Keys


@dataclass(frozen=True)
class StepHead:
    """Where an instance stands, without its documents (for bulk checks)."""

    workflow: str
    version: int
    status: InstanceStatus
    node: str
    seq: int
    attempt: int


class Queued:
    """The queued-steps half of :class:`engine.store.redis_store.RedisStore`."""

    client: redis.Redis
    keys: Keys

    def queued_since(self, before: float, limit: int) -> list[tuple[str, float]]:
        """Queued steps sent before ``before`` (wall clock), oldest first: [(id, sent at)]."""
        flat = self.client.zrangebyscore(self.keys.queued, "-inf", repr(before), start=0, num=limit,
                                         withscores=True)
        return [(text(member), float(score)) for member, score in flat]

    def queued_count(self) -> int:
        """How many steps are queued (sent, not yet started)."""
        return int(self.client.zcard(self.keys.queued))

    def queued_at(self, instance_id: str) -> float | None:
        """When the instance's queued step was sent; None when it is not queued (started, or moved on)."""
        score = self.client.zscore(self.keys.queued, instance_id)
        return None if score is None else float(score)

    def queued_at_many(self, ids: Sequence[str]) -> dict[str, float]:
        """When each of ``ids`` that is still queued was sent (one round trip)."""
        if not ids:
            return {}
        scores = self.client.zmscore(self.keys.queued, list(ids))
        return {iid: float(score) for iid, score in zip(ids, scores, strict=True) if score is not None}

    def step_heads(self, ids: Sequence[str]) -> dict[str, StepHead]:
        """Where each existing instance among ``ids`` stands (a light read: no context, no data)."""
        pipe = self.client.pipeline(transaction=False)
        for iid in ids:
            pipe.hmget(self.keys.instance(iid), "workflow", "version", "status", "node", "seq", "attempt")
        out = {}
        for iid, (workflow, version, status, node, seq, attempt) in zip(ids, pipe.execute(), strict=True):
            if workflow is not None:
                out[iid] = StepHead(text(workflow), int(version), InstanceStatus(text(status)), text(node),
                                    int(seq), int(attempt or 1))
        return out

    def lease_reconcile(self, seconds: float) -> bool:
        """True for the one caller per ``seconds`` that may reconcile queued steps with the broker."""
        return bool(self.client.set(self.keys.reconcile_lock, "1", nx=True, px=max(1, int(seconds * 1000))))

    def lease_full_check(self, seconds: float) -> bool:
        """True for the one caller per ``seconds`` that may read every message of the queues."""
        return bool(self.client.set(self.keys.reconcile_full_lock, "1", nx=True, px=max(1, int(seconds * 1000))))

    def swap_suspects(self, suspects: dict[str, str]) -> dict[str, str]:
        """Replace the reconciliation's suspects (id -> "seq:attempt"); return the previous ones."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.keys.reconcile_suspects)
        pipe.delete(self.keys.reconcile_suspects)
        if suspects:
            pipe.hset(self.keys.reconcile_suspects, mapping=suspects)
        previous = pipe.execute()[0]
        return {text(k): text(v) for k, v in previous.items()}
