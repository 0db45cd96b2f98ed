"""The Redis store: definitions, instances, activities, timers, runs, metrics — the one writer of the engine's state.

Every change of an instance, its indexes and its run is one named operation of
``lua/state.lua`` (:class:`engine.store.instances.Instances`: ``create``, ``advance``,
``retry``, ``fail``, ``park``, ``hold``, ``control``, ``noop``, ``release``, ``signal``,
``refuse``, ``start``), each called with one JSON document of named fields; every change of a gather
node's batch is one operation of ``lua/batch.lua`` (:class:`engine.store.batches.Batches`);
the shared rate and concurrency limits are ``lua/limits.lua`` (:class:`engine.store.limits.Limits`).
The engine's code writes its state only through this package, with keys built by
:class:`engine.store.keys.Keys` (tests clean up with ``engine.testing.delete_prefix``).

One Redis client per process role: the broker's enqueuer (:mod:`engine.broker.redis_queue`)
writes Celery's queue lists through the store's client (``engine.app.enqueuer_for``), and the
console's keys go through the same one (``console.app.build_context``). Besides it, the worker
bootstrap opens a short-lived one for its start-up checks (``engine.worker``) and the portfolio
manager keeps its own (its data may live on another Redis). Nothing outside ``engine/`` holds
the store: ``Engine`` keeps it private; tests reach it through :mod:`engine.testing`, and the
bench reads the stored bytes through :class:`engine.ops.inspect.Inspector` (read-only).

Adding a store operation: a method in ``instances.py`` that builds its document and calls
``_change``, and a function of the same name in ``ops`` of ``lua/state.lua`` (see both headers).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import redis

from engine.connections import PinnedCalls
from engine.definitions.nodes import Definition
from engine.store.audit import AuditLog
from engine.store.batches import Batch, BatchChange, Batches, batch_script
from engine.store.codec import (
    COMPRESS_OVER,
    Applied,
    Envelope,
    NewInstance,
    Placement,
    decode_activities,
    decode_instance_hash,
    dumps,
    pack,
    unpack,
)
from engine.store.definitions import Definitions, publish_script
from engine.store.fields import Fields
from engine.store.housekeeping import Housekeeping, Housekept, housekeep_script
from engine.store.instances import LIVE, Instances, state_script
from engine.store.keys import Keys
from engine.store.limits import Limits, LimitState, Verdict, limits_script
from engine.store.marks import Marks, StartedStep
from engine.store.observed import Observed
from engine.store.queued import Queued, StepHead
from engine.store.runs import Runs, claim_script

DEFAULT_RETENTION_SECONDS = 14 * 24 * 3600

__all__ = [
    "COMPRESS_OVER", "DEFAULT_RETENTION_SECONDS", "LIVE", "Applied", "Batch", "BatchChange", "Envelope",
    "Housekept", "LimitState", "NewInstance", "Placement", "RedisStore", "StartedStep", "StepHead", "Verdict",
    "decode_activities", "decode_instance_hash", "dumps", "pack", "unpack",
]


class RedisStore(Definitions, Instances, Observed, Queued, Marks, Runs, Batches, AuditLog, Housekeeping, Fields,
                 Limits):
    """The engine's state on one Redis (or a fakeredis with Lua, for fast tests)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys | None = None,
        retention_seconds: int = DEFAULT_RETENTION_SECONDS,
        replicate: Callable[[redis.Redis], int] | None = None,
    ) -> None:
        self.client = client
        self._pinned = PinnedCalls(client)
        #: Called after a terminal transition (``WAIT`` for replicas; see engine.connections.ReplicaWait).
        self.replicate = replicate
        self.keys = keys or Keys()
        self.retention_seconds = int(retention_seconds)
        self._state = state_script(client)
        self._publish = publish_script(client)
        self._claim = claim_script(client)
        self._batch = batch_script(client)
        self._housekeep = housekeep_script(client)
        self._limits = limits_script(client)
        self._definitions: dict[tuple[str, int], Definition] = {}
        self._prefetched = {}
        self._collecting = threading.local()

    def close(self) -> None:
        """Close the Redis connection pool (and the connections the store's threads kept)."""
        self._pinned.close()
        self.client.close()
