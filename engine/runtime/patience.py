"""Patience with Redis: a step keeps trying while Redis is unreachable, then gives the message back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from engine.errors import DataSetLost

log = logging.getLogger(__name__)

#: How long a step keeps trying to reach Redis before giving the message back.
REDIS_PATIENCE_SECONDS = 120.0


def patiently(fn: Callable[[], Any]) -> Any:
    """Run ``fn``, retrying while Redis is unreachable (it is idempotent: every write is a CAS)."""
    delay, waited = 0.5, 0.0
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            if waited >= REDIS_PATIENCE_SECONDS:
                raise
            log.warning("Redis unreachable (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)
        except DataSetLost as exc:
            log.critical("%s", exc)
            raise
