"""Batches of gather nodes: reading them, and every change of one (``lua/batch.lua``).

An instance joins a batch in ``lua/state.lua``, atomically with the step that brings it to the
gather node (:class:`engine.store.codec.Placement` carries the arrival). Everything after
that -- close, the batch step's attempts, its answer (kept once), applied -- is one operation
of ``lua/batch.lua`` here, each a compare-and-set on the batch's status and attempt.

Adding an operation: a method here that calls :meth:`Batches._batch_op`, and a branch of the
same name in ``lua/batch.lua``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis

from engine.jsoncodec import loads
from engine.keyspace import read_lua
from engine.store.codec import Envelope, decode_activities, dumps, load, pack, text, unpack
from engine.store.keys import Keys


def batch_script(client: redis.Redis) -> Any:
    """``lua/batch.lua`` registered on ``client``."""
    return client.register_script(read_lua(__file__, "batch.lua"))


@dataclass(frozen=True)
class Batch:
    """One batch of a gather node, as stored."""

    id: str
    name: str
    group: str
    status: str  # open, closed, applied
    node: str
    workflow: str
    version: int
    service: str
    action: str
    opened_at: float
    close_at: float
    close_early: bool
    attempt: int
    members: int
    closed_at: float | None = None
    close_reason: str | None = None
    applied_at: float | None = None
    due_kind: str | None = None
    #: What the batch step waits for while ``due_kind`` is ``limit`` (``rate: brokerage``).
    waiting_for: str | None = None
    answer: dict[str, Any] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Batch:
        """Build from the stored hash (string fields; the answer unpacked)."""

        def number(name: str) -> float | None:
            return float(raw[name]) if raw.get(name) else None

        return cls(id=raw["id"], name=raw["name"], group=raw["group"], status=raw["status"], node=raw["node"],
                   workflow=raw["workflow"], version=int(raw["version"]), service=raw["service"],
                   action=raw["action"], opened_at=float(raw["opened_at"]), close_at=float(raw["close_at"]),
                   close_early=raw.get("close_early") == "1", attempt=int(raw.get("attempt", 1)),
                   members=int(raw.get("members", 0)), closed_at=number("closed_at"),
                   close_reason=raw.get("close_reason") or None, applied_at=number("applied_at"),
                   due_kind=raw.get("due_kind") or None,
                   waiting_for=(raw.get("waiting_for") or None) if raw.get("due_kind") == "limit" else None,
                   answer=loads(raw["answer"]) if raw.get("answer") else None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view (``tradeflow batch ID --json``)."""
        return {k: v for k, v in self.__dict__.items() if k != "extra"}


@dataclass(frozen=True)
class BatchChange:
    """What a batch operation did: ``done``, ``stale`` (status/attempt moved on), ``open`` or ``missing``."""

    outcome: str
    status: str | None = None
    attempt: int | None = None
    answer: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        """True when the operation was applied."""
        return self.outcome == "done"


class Batches:
    """The batch half of :class:`engine.store.redis_store.RedisStore`."""

    client: redis.Redis
    keys: Keys
    retention_seconds: int
    _batch: Any

    # -- reading ------------------------------------------------------------------------------

    def gather_keys(self) -> dict[str, str]:
        """The key names an arrival's document carries (state.lua's ``join`` builds the rest)."""
        k = self.keys
        return {"prefix": k.batch_prefix, "gathers": k.gathers, "batches": k.batches, "open": k.batches_open}

    def batch_closed(self, name: str) -> bool:
        """True when the latest batch called ``name`` exists and is no longer open (an arrival is late)."""
        latest = self.client.hget(self.keys.gathers, name)
        if latest is None:
            return False
        status = self.client.hget(self.keys.batch(text(latest)), "status")
        return status is not None and text(status) != "open"

    def load_batch(self, batch_id: str) -> Batch | None:
        """The batch, or None (never opened, or expired after it was applied)."""
        raw = self.client.hgetall(self.keys.batch(batch_id))
        if not raw:
            return None
        fields = {text(k): (unpack(v) if text(k) == "answer" else text(v)) for k, v in raw.items()}
        return Batch.from_hash(fields)

    def batch_contributions(self, batch_id: str) -> list[tuple[str, Any]]:
        """(instance id, contribution) of every member, in order of arrival."""
        ids = [text(i) for i in self.client.lrange(self.keys.batch_members(batch_id), 0, -1)]
        if not ids:
            return []
        values = self.client.hmget(self.keys.batch_inputs(batch_id), ids)
        return [(iid, load(v) if v is not None else None) for iid, v in zip(ids, values, strict=True)]

    def batch_activities(self, batch_id: str) -> list[dict[str, Any]]:
        """The batch's records, oldest first."""
        return decode_activities(self.client.lrange(self.keys.batch_activities(batch_id), 0, -1))

    def batch_runs(self, batch_id: str) -> list[str]:
        """The runs of the batch's members."""
        return sorted(text(r) for r in self.client.smembers(self.keys.batch_runs(batch_id)))

    def batch_ids(self, limit: int = 50) -> list[str]:
        """Batch ids, newest first (applied batches expire with the retention; their entries are trimmed first)."""
        self.trim_batch_index()
        return [text(b) for b in self.client.zrevrange(self.keys.batches, 0, limit - 1)]

    def trim_batch_index(self, now: float | None = None) -> int:
        """Drop from the batch index the batches whose keys expired; how many were dropped.

        A batch's keys expire ``retention_seconds`` after it was applied, so never sooner after it
        opened (the index's score): only entries older than that are looked at, and of those only
        the ones whose hash is gone are dropped (one still open or closed stays, however old).
        Called where the index is read (:meth:`batch_ids`) and when a batch is applied.
        """
        cutoff = (time.time() if now is None else now) - self.retention_seconds
        old = [text(b) for b in self.client.zrangebyscore(self.keys.batches, "-inf", repr(cutoff))]
        if not old:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for batch_id in old:
            pipe.exists(self.keys.batch(batch_id))
        gone = [batch_id for batch_id, found in zip(old, pipe.execute(), strict=True) if not found]
        if gone:
            self.client.zrem(self.keys.batches, *gone)
        return len(gone)

    def open_batches(self, limit: int = 1000) -> list[tuple[str, float]]:
        """Open batches with their close time, earliest first."""
        return [(text(b), float(s)) for b, s in self.client.zrange(self.keys.batches_open, 0, limit - 1,
                                                                   withscores=True)]

    def parked_batches(self, limit: int = 100) -> list[Batch]:
        """Closed batches whose step waits for a rate limit now (due kind ``limit``), at most ``limit`` looked at."""
        ids = [text(b) for b in self.client.zrange(self.keys.batches_due, 0, limit - 1)]
        pipe = self.client.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hget(self.keys.batch(batch_id), "due_kind")
        parked = [b for b, kind in zip(ids, pipe.execute(), strict=True) if kind is not None and text(kind) == "limit"]
        return [b for b in (self.load_batch(i) for i in parked) if b is not None and b.status == "closed"]

    def due_batches(self, now: float, limit: int = 100) -> list[str]:
        """Closed batches whose step is due to be (re)sent at ``now``."""
        return [text(b) for b in self.client.zrangebyscore(self.keys.batches_due, "-inf", repr(now), 0, limit)]

    # -- the operations -----------------------------------------------------------------------

    def close_batch(self, batch_id: str, *, due: float, reason: str, early: bool, record: dict[str, Any],
                    send: Envelope | None = None) -> BatchChange:
        """Close an open batch (only if nothing could still arrive, when ``early``); push its step's message."""
        return self._batch_op("close", batch_id, {"expect": {"status": "open"}, "due": repr(due), "reason": reason,
                                                  "early": early}, {"record": pack(record)}, send)

    def batch_started(self, batch_id: str, *, attempt: int, due: float) -> BatchChange:
        """Attempt ``attempt`` of the batch step began: its deadline is ``due``."""
        return self._batch_op("started", batch_id, {"expect": {"status": "closed", "attempt": attempt},
                                                    "due": repr(due)}, {})

    def batch_answer(self, batch_id: str, answer: dict[str, Any], record: dict[str, Any]) -> BatchChange:
        """Keep ``answer`` as the batch step's answer unless one is kept already; returns the kept one."""
        change = self._batch_op("answer", batch_id, {"expect": {"status": "closed"}},
                                {"answer": pack(answer), "record": pack(record)})
        return change

    def batch_retry(self, batch_id: str, *, attempt: int, next_attempt: int, due: float,
                    record: dict[str, Any], kind: str = "retry", reason: str | None = None) -> BatchChange:
        """Attempt ``attempt`` failed: send ``next_attempt`` at ``due``.

        ``kind`` is the batch's ``due_kind`` meanwhile: ``retry`` (a backoff) or ``limit`` (the step
        is over its node's rate limit and waits, same attempt, for a free call; ``reason`` says
        which, as an instance's ``waiting_for`` does).
        """
        return self._batch_op("retry", batch_id, {"expect": {"status": "closed", "attempt": attempt},
                                                  "attempt": next_attempt, "due": repr(due), "kind": kind,
                                                  "reason": reason}, {"record": pack(record)})

    def batch_resend(self, batch_id: str, *, attempt: int, next_attempt: int, now: float, due: float,
                     record: dict[str, Any], send: Envelope | None = None) -> BatchChange:
        """The due time of ``attempt`` passed at ``now``: send ``next_attempt`` (deadline ``due``)."""
        return self._batch_op("resend", batch_id, {"expect": {"status": "closed", "attempt": attempt},
                                                   "attempt": next_attempt, "due": repr(due), "now": repr(now)},
                              {"record": pack(record)}, send)

    def batch_applied(self, batch_id: str, record: dict[str, Any], ttl: int | None = None) -> BatchChange:
        """The batch's answer was applied to every member: it is done, and expires after ``ttl`` seconds
        (its definition's retention; the store's ``retention_seconds`` when None).

        The index then loses the entries of the batches that expired meanwhile (:meth:`trim_batch_index`).
        """
        change = self._batch_op("applied", batch_id, {"expect": {"status": "closed"},
                                                      "ttl": ttl or self.retention_seconds},
                                {"record": pack(record)})
        if change.done:
            self.trim_batch_index()
        return change

    def batch_note(self, batch_id: str, record: dict[str, Any]) -> BatchChange:
        """Append ``record`` to the batch's records (a no-op delivery, for instance)."""
        return self._batch_op("note", batch_id, {}, {"record": pack(record)})

    def _batch_op(self, op: str, batch_id: str, doc: dict[str, Any], docs: dict[str, Any],
                  send: Envelope | None = None) -> BatchChange:
        k = self.keys
        if send is not None:
            docs["message"] = send.body
        doc = {key: value for key, value in doc.items() if value is not None}
        doc.setdefault("now", repr(time.time()))
        doc.update(op=op, id=batch_id, runs=f"{k.prefix}:run:", docs=list(docs))
        reply = self._batch(keys=[k.batch(batch_id), k.batch_activities(batch_id), k.batches_open, k.batches_due,
                                  send.key if send else k.batch(batch_id)], args=[dumps(doc), *docs.values()])
        if text(reply[0]) == "missing":
            return BatchChange("missing")
        answer = load(reply[3]) if len(reply) > 3 and reply[3] is not None else None
        return BatchChange(text(reply[0]), text(reply[1]), int(text(reply[2])), answer)
