"""Bare Celery tasks for the baseline, on the same queue, pool and Redis as the engine's."""

from __future__ import annotations

import os

import redis
from celery import shared_task

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["TRADEFLOW_REDIS_URL"])
    return _client


@shared_task(name="bench.bare", ignore_result=True)
def bare(counter: str, *_: object) -> str:
    """A no-op that counts itself (one INCR, like the engine's one Lua call per step)."""
    _redis().incr(counter)
    return counter
