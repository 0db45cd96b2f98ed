"""Housekeeping: the global indexes lose the entries whose targets expired.

Instances, their activities, a run's status sets and metadata, and a batch's keys expire on
their own (TTLs set when they finish: ``lua/state.lua``, ``lua/batch.lua``). What remains are
entries of single global keys that name them: the runs index, the batch index and the gathers
hash; and the audit log's stream, trimmed to the retention on each append, keeps its last entries
while nothing is appended. The sweeper trims them here, at most once per ``every`` seconds across every worker (a
lease), over the ``limit`` oldest entries of each index -- one Lua call (``lua/housekeep.lua``).
It also repairs what finishing alone cannot: the metadata of a run whose last instance finished
before the metadata was written, or of a run that never had an instance, gets its TTL here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from engine.instance import TERMINAL_STATUSES, InstanceStatus
from engine.keyspace import read_lua
from engine.store.codec import dumps
from engine.store.keys import Keys

#: Seconds between two housekeeping passes (the sweeper runs every few seconds; this is enough).
HOUSEKEEPING_SECONDS = 60.0
#: Entries of each index looked at per pass (the oldest: those most likely expired).
HOUSEKEEPING_LIMIT = 1000


def housekeep_script(client: redis.Redis) -> Any:
    """``lua/housekeep.lua`` registered on ``client``."""
    return client.register_script(read_lua(__file__, "housekeep.lua"))


@dataclass(frozen=True)
class Housekept:
    """What one housekeeping pass did."""

    runs_dropped: int = 0
    runs_expiring: int = 0
    batches_dropped: int = 0
    names_dropped: int = 0
    audit_dropped: int = 0

    @property
    def total(self) -> int:
        """Every change the pass made."""
        return self.runs_dropped + self.runs_expiring + self.batches_dropped + self.names_dropped + self.audit_dropped


class Housekeeping:
    """The housekeeping part of :class:`engine.store.redis_store.RedisStore`."""

    client: redis.Redis
    keys: Keys
    retention_seconds: int
    _housekeep: Any

    def housekeep(self, every: float = HOUSEKEEPING_SECONDS, limit: int = HOUSEKEEPING_LIMIT) -> Housekept | None:
        """Trim the runs index, the batch index, the gathers hash and the audit log; None when another
        pass ran less than ``every`` seconds ago (``every=0``: no rate limit)."""
        k = self.keys
        if every > 0 and not self.client.set(k.housekeeping_lock, "1", nx=True, px=max(1, int(every * 1000))):
            return None
        doc = {"runs": k.runs_prefix, "batch": k.batch_prefix, "ttl": self.retention_seconds, "limit": limit,
               "live": [s.value for s in InstanceStatus if s not in TERMINAL_STATUSES],
               "finished": sorted(s.value for s in TERMINAL_STATUSES)}
        reply = self._housekeep(keys=[k.runs, k.batches, k.gathers], args=[dumps(doc)])
        oldest_ms = max(int((time.time() - self.retention_seconds) * 1000), 0)  # audit ids: Redis's clock, in ms
        audit_dropped = int(self.client.xtrim(k.audit, minid=oldest_ms, approximate=False))
        return Housekept(*(int(n) for n in reply), audit_dropped=audit_dropped)
