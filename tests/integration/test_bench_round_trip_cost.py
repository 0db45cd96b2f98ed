"""The round-trip benchmark: the same script calls alone and pipelined, on a real Redis."""

from __future__ import annotations

import pytest
import redis

from bench.round_trip_cost import run

pytestmark = pytest.mark.integration


def test_pipelined_calls_cost_less_wall_time_each_and_the_keys_are_deleted(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        found = run(client, calls=600, batch=10, rounds=2)
        alone, together = found["one_per_round_trip"], found["10_per_round_trip"]
        assert set(alone) == set(together) == {"redis_us", "client_us", "wall_us"}
        # ten calls share one round trip's send, wait and reply: each takes a fraction of the wall time
        assert together["wall_us"] < alone["wall_us"]
        assert found["a_round_trip_costs"]["wall_us"] > 0
        assert not client.keys("bench-rtc-*")
    finally:
        client.close()


def test_a_batch_of_one_is_refused() -> None:
    from bench.round_trip_cost import main

    with pytest.raises(SystemExit):
        main(["--batch", "1"])
