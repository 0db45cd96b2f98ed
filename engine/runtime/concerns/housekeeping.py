"""Housekeeping: the sweeper trims the global indexes of what expired (runs, batches, gathers, the
audit log) and the limit names unused for the retention.

At most once a minute across the fleet (a lease in the store); one Lua call over the oldest
entries of each index (:meth:`engine.store.housekeeping.Housekeeping.housekeep`).
"""

from __future__ import annotations

import logging

from engine.runtime.outcomes import StepOutcomes
from engine.runtime.pipeline import Hook

log = logging.getLogger(__name__)


class Housekeeping(Hook):
    """Runs the store's housekeeping pass with every sweep; it re-sends no step, so it counts none."""

    def on_sweep(self, runtime: StepOutcomes) -> int:
        """Trim what expired from the global indexes (when this process holds the lease)."""
        done = runtime.store.housekeep()
        if done is None:
            return 0
        forgotten = runtime.store.limit_forget(runtime.store.retention_seconds)
        if done.total or forgotten:
            log.info("housekeeping: %d index entries trimmed or given a TTL, %d unused limit names dropped",
                     done.total, forgotten)
        return 0
