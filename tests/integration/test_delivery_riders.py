"""A delivered step started by its delivery instead of kombu's bookkeeping, on real ``solo`` Celery workers.

Every step its own delivered message (``TRADEFLOW_INLINE_STEPS=0``, ``TRADEFLOW_DRAIN_STEPS=0``):
each step applies once, kombu's unacknowledged entries are all gone at the end, the round trips
carrying kombu's bookkeeping or a ``state.lua`` call drop from four per step to two, a duplicate
delivery is still one applied transition and one no-op, and a worker killed mid-step still gets
its step re-sent (its start, recorded with the delivery, names the dead process).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from engine.api import Engine
from engine.broker import CeleryEnqueuer
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus
from engine.ops.fleet import Fleet, FleetSpec
from engine.testing import delete_prefix, make_store
from tests.integration.conftest import LiveFleet, fleet_env, sender_app
from tests.integration.test_workers import chain

pytestmark = pytest.mark.integration

#: A message per step: no inline chain, no draining.
DELIVERED = {"TRADEFLOW_INLINE_STEPS": "0", "TRADEFLOW_DRAIN_STEPS": "0",
             "TRADEFLOW_SERVICE_MODULES": "tests.integration.services,tests.integration.trips"}
TRIPS_FLOW = {"name": "trips", "start": "t", "nodes": {
    "t": {"type": "service", "service": "itest", "action": "trips", "input": {}, "transitions": {"ok": "done"}},
    "done": {"type": "terminal", "status": "succeeded"}}}


@contextmanager
def solo_fleet(redis_url: str, processes: int, beat: bool, queues: str = "itest,engine", pool: str = "solo",
               concurrency: int = 1, **env: str) -> Iterator[LiveFleet]:
    """``processes`` solo workers on ``queues`` (the default layout's kind; or ``pool`` x ``concurrency``),
    a message per step."""
    prefix = f"tfdr-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    engine = Engine(make_store(client, prefix, 600), CeleryEnqueuer(sender_app(redis_url, prefix)))
    fleet = Fleet([FleetSpec(queues, pool, concurrency) for _ in range(processes)], beat=beat,
                  env={**fleet_env(redis_url, prefix), **DELIVERED, **env}, loglevel="INFO")
    try:
        with fleet:
            live = LiveFleet(engine, fleet, prefix, client)
            live.engine.publish(load_definition(chain("abc", ["a", "b", "c"])))
            live.engine.publish(load_definition(json.dumps(TRIPS_FLOW)))
            live.engine.publish(load_definition(json.dumps({
                "name": "sleepy", "start": "slow", "nodes": {
                    "slow": {"type": "service", "service": "itest", "action": "slow",
                             "input": {"key": "data.key", "sleep": "data.sleep"},
                             "transitions": {"ok": "after"}, "timeout_seconds": 60},
                    "after": {"type": "service", "service": "itest", "action": "step",
                              "input": {"key": "data.key", "node": "'after'"}, "transitions": {"ok": "done"}},
                    "done": {"type": "terminal", "status": "succeeded"}}})))
            yield live
    finally:
        delete_prefix(client, prefix)
        client.close()


@pytest.fixture(scope="module")
def live(redis_url: str) -> Iterator[LiveFleet]:
    """Two solo workers on the itest and engine queues, plus beat (timers, sweeper)."""
    with solo_fleet(redis_url, 2, beat=True) as found:
        yield found


def applied_nodes(live: LiveFleet, iid: str) -> list[str]:
    return [a["node"] for a in live.engine.activities(iid) if a["outcome"] == "applied"]


def unacked(live: LiveFleet) -> tuple[int, int, int]:
    """kombu's unacknowledged hash and index, and the consumer records beside them, under the fleet's prefix."""
    q = f"{live.prefix}:q:"
    return (live.client.hlen(f"{q}unacked"), live.client.zcard(f"{q}unacked_index"),
            live.client.hlen(f"{q}unacked_consumer"))


def settled(live: LiveFleet, timeout: float = 30) -> tuple[int, int, int]:
    """kombu's unacknowledged entries once the last acks are in (an ack follows its task's return)."""
    end = time.monotonic() + timeout
    while unacked(live) != (0, 0, 0) and time.monotonic() < end:
        time.sleep(0.1)
    return unacked(live)


def test_every_delivered_step_applies_once_and_nothing_stays_unacked(live: LiveFleet) -> None:
    ids = live.engine.start_many("abc", [{"key": f"r{i}"} for i in range(60)], run="riders")
    instances = live.wait(ids, timeout=120)
    assert all(i.status is InstanceStatus.SUCCEEDED for i in instances)
    for iid in ids:
        assert applied_nodes(live, iid) == ["a", "b", "c"]
        assert [a["outcome"] for a in live.engine.activities(iid)].count("noop") == 0
    calls = live.calls()
    assert all(calls[f"r{i}:{node}"] == 1 for i in range(60) for node in "abc")
    assert settled(live) == (0, 0, 0)


def test_a_step_delivered_twice_applies_once(live: LiveFleet) -> None:
    """The duplicate is started by its delivery too; its step is stale: a no-op, acked by kombu in memory."""
    iid = live.run_with_a_duplicate()
    assert applied_nodes(live, iid) == ["slow", "after"]
    assert [a["outcome"] for a in live.engine.activities(iid)].count("noop") == 1
    assert settled(live) == (0, 0, 0)


def test_a_worker_killed_mid_step_gets_its_step_resent(live: LiveFleet) -> None:
    """The killed worker's start (with its delivery) names it as the carrier: the sweep re-sends the step."""
    pids_key = f"{live.prefix}:slow-pids"
    live.client.delete(pids_key)
    ids = live.engine.start_many("sleepy", [{"key": f"kill{i}", "sleep": 3} for i in range(2)], run="kill")
    end = time.monotonic() + 60
    while not live.client.llen(pids_key):
        assert time.monotonic() < end, "no worker started a slow step"
        time.sleep(0.05)
    os.kill(int(live.client.lindex(pids_key, 0)), signal.SIGKILL)
    instances = live.wait(ids, timeout=120)
    assert all(i.status is InstanceStatus.SUCCEEDED for i in instances)
    for iid in ids:
        assert applied_nodes(live, iid) == ["slow", "after"]
    assert sum(live.calls()[f"kill{i}:slow"] for i in range(2)) >= 3  # the killed step ran again


@pytest.mark.parametrize(("pool", "riders", "most", "least"),
                         [("solo", "1", 2.1, 1.9), ("solo", "0", 4.1, 3.9), ("threads", "1", 4.1, 3.9)])
def test_a_delivered_step_costs_two_round_trips_of_kombus_and_the_engines_with_riders_four_without(
        redis_url: str, pool: str, riders: str, most: float, least: float) -> None:
    """Trips carrying kombu's bookkeeping (append, ack) or a state.lua call (start, advance), per step;
    a threads worker rides nothing (its reserved messages can wait for a thread: a start read at delivery could
    be stale when the step runs)."""
    with solo_fleet(redis_url, 1, beat=False, queues="itest", pool=pool, concurrency=1 if pool == "solo" else 2,
                    TRADEFLOW_BROKER_RIDERS=riders) as live:
        ids = live.engine.start_many("abc", [{"key": f"t{i}"} for i in range(40)], run="counted")
        live.wait(ids, timeout=120)
        time.sleep(0.5)  # the last ack follows its task's return
        [probe] = live.engine.start_many("trips", [{}], run="probe")
        live.wait([probe])
        trips = {k.decode(): int(v) for k, v in live.client.hgetall(f"{live.prefix}:trips").items()}
        steps = 40 * 3 + 1  # the probe's own start (and, with riders, its delivery) counted before it wrote
        per_step = sum(trips.values()) / steps
        assert least <= per_step <= most, trips
        if riders == "1" and pool == "solo":
            # the start is the delivery's bookkeeping: no trip of kombu's own per step
            assert trips.get("engine", 0) >= 2 * 40 * 3 and trips.get("kombu", 0) + trips.get("kombu+engine", 0) <= 5, \
                trips
        assert settled(live) == (0, 0, 0)


def received_lines(live: LiveFleet) -> int:
    """Celery's INFO line per step message its own strategy took ("Task itest.step[...] received")."""
    log = "".join(path.read_text() for path in live.fleet.logdir.glob("*.log"))
    return sum(1 for line in log.splitlines() if "Task itest.step[" in line and "received" in line)


def run_abc(live: LiveFleet, run: str, count: int) -> None:
    ids = live.engine.start_many("abc", [{"key": f"{run}{i}"} for i in range(count)], run=run)
    instances = live.wait(ids, timeout=120)
    assert all(i.status is InstanceStatus.SUCCEEDED for i in instances)
    calls = live.calls()
    assert all(calls[f"{run}{i}:{node}"] == 1 for i in range(count) for node in "abc")


@pytest.mark.parametrize("straight", ["1", "0"])
def test_a_solo_worker_runs_its_step_messages_straight_unless_turned_off(redis_url: str, straight: str) -> None:
    """Straight from the message (engine.broker.step_strategy): no Celery request, so none of its INFO lines;
    ``TRADEFLOW_STRAIGHT_STEPS=0``: Celery's own strategy, a "received" line per step message. With it on,
    task events turned on in the running worker (what Flower does when it starts) bring Celery's strategy back."""
    with solo_fleet(redis_url, 1, beat=False, queues="itest", TRADEFLOW_STRAIGHT_STEPS=straight) as live:
        run_abc(live, "s", 20)
        assert received_lines(live) == (0 if straight == "1" else 60)
        assert settled(live) == (0, 0, 0)
        if straight == "1":
            replies = sender_app(redis_url, live.prefix).control.enable_events(reply=True, timeout=10)
            assert replies, "the worker did not answer enable_events"
            run_abc(live, "e", 5)
            assert received_lines(live) == 15
            assert settled(live) == (0, 0, 0)
