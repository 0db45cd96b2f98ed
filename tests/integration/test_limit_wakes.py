"""Parked steps are woken when their time comes, not by the periodic tick: on real workers whose
timer tick is an hour apart, a rate-limited line drains by the early wakes alone, at the rate."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus
from tests.integration.conftest import LiveFleet, live_fleet
from tests.integration.test_limits import limited_flow

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hourly_tick(redis_url: str) -> Iterator[LiveFleet]:
    """The engine and itest fleets and beat, the timers' periodic tick an hour apart."""
    with live_fleet(redis_url, TRADEFLOW_TIMER_INTERVAL="3600") as found:
        yield found


def test_a_rate_limited_line_drains_by_early_wakes_without_the_tick(hourly_tick: LiveFleet) -> None:
    live = hourly_tick
    engine, client, prefix = live.engine, live.client, live.prefix
    engine.publish(load_definition(json.dumps(limited_flow(
        "paced", {"rate": {"key": "'paced'", "per_second": 40, "burst": 10}}))))
    ids = [engine.start("paced", {"key": "paced"}, run="paced") for _ in range(120)]
    # the tick never comes within the test: only the early wakes re-send the parked steps
    instances = live.wait(ids, timeout=120)
    assert all(i.status is InstanceStatus.SUCCEEDED for i in instances)
    assert client.llen(f"{prefix}:finished:paced") == 120  # every step ran once
    per_second = {int(k): int(v) for k, v in client.hgetall(f"{prefix}:per-second:paced").items()}
    assert max(per_second.values()) <= 40 + 2, per_second  # (a call lands a few ms after its check)
    # at most 10 calls in any 0.25 s: 120 calls span 2.75 s at least, so 3 seconds of Redis's clock
    assert max(per_second) - min(per_second) >= 2, per_second
    [state] = [s for s in engine.limits() if s.name == "paced"]
    assert state.parked == 0 and state.waits >= 100  # they were parked, and woken
