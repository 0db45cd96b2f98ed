"""Step metrics as stored in Redis: their layout, and reading them back.

Each worker counts its steps in memory and flushes them to Redis every few seconds
(:class:`engine.runtime.concerns.metrics.StepMetrics`, the metrics concern of a step's life).
A worker's hot path pays one dictionary update per step (under a lock, for threaded pools).
Every ``interval`` seconds (default 5) the process adds its counts to Redis in one pipelined
batch (:meth:`engine.store.redis_store.RedisStore.add_step_metrics`) and starts again from
zero: in workers, from a daemon thread started with the process's first step (so an idle
worker's last counts arrive too), and anywhere on the next step once the interval has passed;
it also flushes at a clean exit. A process killed by SIGKILL loses at most the counts of its
last interval. Whoever renders metrics (the console's ``/metrics``) reads them back with
:meth:`engine.api.Engine.step_metrics`, which parses the store's hashes with :func:`parse_step_metrics`.

Hashes, keys from :class:`engine.store.keys.Keys` (``<prefix>:metrics:...``):

- ``steps``: ``<outcome>|<workflow>|<node>`` -> count (outcome: applied, retry, failed, noop, skipped)
- ``step_seconds``: ``<node>|<bucket upper bound>`` -> count (not cumulative), ``<node>|sum``, ``<node>|count``
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

#: Upper bounds (seconds) of the step duration histogram's buckets; ``+Inf`` is implied.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class StepStats:
    """Step metrics as read back from Redis (every process's flushed counts added up)."""

    #: (outcome, workflow, node) -> count
    steps: dict[tuple[str, str, str], int] = field(default_factory=dict)
    #: node -> (cumulative bucket counts by upper bound, incl. +Inf; sum of seconds; count)
    durations: dict[str, tuple[list[tuple[str, int]], float, int]] = field(default_factory=dict)


def parse_step_metrics(raw_steps: dict[str, str], raw_seconds: dict[str, str]) -> StepStats:
    """The flushed step metrics as the store holds them, added up into counts and histograms."""
    stats = StepStats()
    for name, count in raw_steps.items():
        outcome, workflow, node = name.split("|", 2)
        stats.steps[(outcome, workflow, node)] = int(count)
    by_node: dict[str, dict[str, float]] = defaultdict(dict)
    for name, value in raw_seconds.items():
        node, _, part = name.rpartition("|")
        by_node[node][part] = float(value)
    for node, parts in by_node.items():
        running, buckets = 0, []
        for bound in [*map(repr, BUCKETS), "+Inf"]:
            running += int(parts.get(bound, 0))
            buckets.append((bound, running))
        stats.durations[node] = (buckets, parts.get("sum", 0.0), int(parts.get("count", 0)))
    return stats


__all__ = ["BUCKETS", "StepStats", "parse_step_metrics"]
