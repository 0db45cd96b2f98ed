"""What the console and ``/metrics`` read or add beside the instances: step metrics, timers due."""

from __future__ import annotations

from collections.abc import Mapping

import redis

from engine.store.codec import text
from engine.store.keys import Keys

#: The two hashes of flushed step metrics (see :mod:`engine.metrics`).
STEPS, STEP_SECONDS = "steps", "step_seconds"


class Observed:
    """The observing part of :class:`engine.store.redis_store.RedisStore`."""

    client: redis.Redis
    keys: Keys

    def add_step_metrics(self, steps: Mapping[str, int], seconds: Mapping[str, float]) -> None:
        """Add one process's step counts and duration buckets (one pipelined round trip).

        ``steps``: ``<outcome>|<workflow>|<node>`` -> count; ``seconds``: ``<node>|<bound>`` ->
        count, ``<node>|count`` -> count and ``<node>|sum`` -> seconds (a float).
        """
        pipe = self.client.pipeline(transaction=False)
        for name, count in steps.items():
            pipe.hincrby(self.keys.metrics(STEPS), name, int(count))
        for name, value in seconds.items():
            if name.endswith("|sum"):
                pipe.hincrbyfloat(self.keys.metrics(STEP_SECONDS), name, float(value))
            else:
                pipe.hincrby(self.keys.metrics(STEP_SECONDS), name, int(value))
        pipe.execute()

    def step_metrics(self) -> tuple[dict[str, str], dict[str, str]]:
        """The flushed step metrics as stored: (steps hash, step_seconds hash), decoded."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.metrics(STEPS))
        pipe.hgetall(self.keys.metrics(STEP_SECONDS))
        raw_steps, raw_seconds = pipe.execute()
        return ({text(k): text(v) for k, v in raw_steps.items()},
                {text(k): text(v) for k, v in raw_seconds.items()})

    def timers_due(self, now: float) -> int:
        """Waits, retry backoffs and review timeouts due at ``now`` that no tick has moved on yet."""
        return int(self.client.zcount(self.keys.timers, "-inf", repr(now)))
