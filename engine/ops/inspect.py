"""A read-only look at what an engine keeps in Redis, for benchmarks and diagnostics.

The Engine API answers questions about instances (:meth:`engine.api.Engine.get`,
:meth:`~engine.api.Engine.list`, :meth:`~engine.api.Engine.activities`); a benchmark that
measures *how* the state is stored (the bytes of an instance's hash and history, of a run's
indexes; one pipelined read of thousands of histories) needs the key names and the stored
encoding instead. :class:`Inspector` gives exactly that and nothing that writes: key names
under an engine's prefix (built by the store's own :class:`engine.store.keys.Keys`, so they
cannot drift), the ids of a run, and the decoding of stored documents.

    inspector = Inspector(client, "wf")
    pipe = client.pipeline(transaction=False)
    for iid in inspector.run_ids("rebalance-2026-11-24"):
        pipe.lrange(inspector.activities(iid), 0, -1)
    histories = [inspector.decode_activities(raw) for raw in pipe.execute()]

The key layout is the store's, not a contract: code that is not measuring the store reads
through the Engine API.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

from engine.instance import InstanceStatus
from engine.keyspace import text
from engine.store.codec import decode_activities, unpack
from engine.store.keys import Keys


class Inspector:
    """Key names, run ids and stored documents of the engine whose keys live under ``key_prefix``; reads only."""

    def __init__(self, client: redis.Redis, key_prefix: str) -> None:
        self.client = client
        self.prefix = key_prefix
        self._keys = Keys(key_prefix)

    # -- key names (the store's own builders) -----------------------------------------------

    def instance(self, instance_id: str) -> str:
        """The instance's hash."""
        return self._keys.instance(instance_id)

    def activities(self, instance_id: str) -> str:
        """The instance's activity list (its history)."""
        return self._keys.activities(instance_id)

    def run_status(self, run: str, status: str) -> str:
        """The set of ``run``'s instance ids in ``status``."""
        return self._keys.run_status(run, status)

    def run_meta(self, run: str) -> str:
        """The hash of ``run``'s metadata (total, created_at, deadline...)."""
        return self._keys.run_meta(run)

    @property
    def timers(self) -> str:
        """The sorted set of parked instances by wake time."""
        return self._keys.timers

    @property
    def deadlines(self) -> str:
        """The sorted set of started steps by deadline."""
        return self._keys.deadlines

    def run_indexes(self, run: str) -> dict[str, str]:
        """Label -> key of ``run``'s indexes (its status sets and metadata) and the shared timer and deadline sets."""
        names = {f"run:{s.value}": self.run_status(run, s.value) for s in InstanceStatus}
        names.update({"run meta": self.run_meta(run), "timers": self.timers, "deadlines": self.deadlines})
        return names

    # -- reads ------------------------------------------------------------------------------

    def run_ids(self, run: str, statuses: Iterable[InstanceStatus] | None = None) -> list[str]:
        """Ids of ``run``'s instances in any of ``statuses`` (all when None), sorted."""
        keys = [self.run_status(run, s.value) for s in (statuses or InstanceStatus)]
        return sorted(text(i) for i in self.client.sunion(keys)) if keys else []

    # -- the stored encoding ----------------------------------------------------------------

    @staticmethod
    def decode(raw: bytes | str) -> str:
        """The JSON text of a stored document (a hash field such as ``result``; compressed or not)."""
        return unpack(raw)

    @staticmethod
    def decode_activities(raw: Iterable[bytes | str]) -> list[dict[str, Any]]:
        """Activity records as read from an activity list."""
        return decode_activities(raw)


__all__ = ["Inspector"]
