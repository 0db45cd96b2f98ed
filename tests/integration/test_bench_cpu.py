"""The benchmark's Redis CPU parts: the main process and its forks (AOF rewrites), on a redis-server of its own."""

from __future__ import annotations

import time

import pytest
import redis

from bench.capacity import private_redis
from bench.cpu import REDIS_FORKS_PART, REDIS_PART, redis_cpu_parts, redis_forks

pytestmark = pytest.mark.integration


def test_an_aof_rewrite_is_counted_as_a_fork_with_its_cpu_apart_from_the_main_process() -> None:
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        try:
            client.set("k", "v" * 1000)
            forks, parts = redis_forks(client), redis_cpu_parts(client)
            assert set(parts) == {REDIS_PART, REDIS_FORKS_PART}
            client.bgrewriteaof()
            deadline = time.monotonic() + 20
            while client.info("persistence")["aof_rewrite_in_progress"] or \
                    client.info("persistence")["aof_rewrite_scheduled"]:
                assert time.monotonic() < deadline, "the rewrite did not end"
                time.sleep(0.05)
            assert redis_forks(client) == forks + 1
            after = redis_cpu_parts(client)
            assert after[REDIS_FORKS_PART] > parts[REDIS_FORKS_PART]  # the child's CPU, counted once it ended
        finally:
            client.close()
