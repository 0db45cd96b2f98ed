"""Riders: the next drained step's start (and the take of the one after) sent with a step's last change.

The store contract (a start riding along an advance: one round trip, its ``now`` read when sent,
its reply served to the step's own start, a script the server forgot loaded again), where a
ride goes in a step's life (the last change only, never a chained one, dropped when the step
ends otherwise), and the draining with it: one round trip per step, each step applied once, and
a worker that stops or dies with a step started by a ride leaves nothing lost.
"""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from typing import Any

import fakeredis
import pytest
import redis
from celery import Celery

from engine.api import Engine
from engine.app import sender_app
from engine.broker import MemoryEnqueuer, RedisQueueEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.errors import ActionFailed
from engine.instance import InstanceStatus, Outcome
from engine.runtime.concerns.draining import Drain
from engine.service import Transition
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.store.riders import Rider, evalsha, send_with_riders
from engine.testing import runtime_of, store_of

TIMEOUT = 60


def _flow(steps: int) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    for i in range(steps):
        nodes[f"s{i}"] = {"type": "service", "service": "svc", "action": "work", "input": {},
                          "timeout_seconds": TIMEOUT, "transitions": {"ok": f"s{i + 1}" if i + 1 < steps else "done"}}
    nodes["done"] = {"type": "terminal", "status": "succeeded"}
    return {"name": f"flow{steps}", "start": "s0", "nodes": nodes}


class Counting(redis.Redis):
    """A client counting its round trips: each command sent alone, each pipeline."""

    trips: Counter[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.trips["command"] += 1
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute, trips = pipe.execute, self.trips

        def counted(raise_on_error: bool = True) -> Any:
            trips["pipeline"] += 1
            return execute(raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


@pytest.fixture
def counting(redis_url: str, real_redis: redis.Redis) -> Counting:
    client = Counting.from_url(redis_url)
    client.trips = Counter()
    return client


def _ok(node: Any, payload: Any) -> Transition:
    return Transition("ok")


def _carrier(engine: Engine, message: Any) -> str:
    return runtime_of(engine).carrier(message.node, message.seq, message.attempt)


# -- the store contract ---------------------------------------------------------------------------

def test_a_start_rides_along_a_step_s_last_change_and_the_step_then_starts_without_a_round_trip(
        counting: Counting, key_prefix: str) -> None:
    clock = ManualClock(1_750_000_000.0)
    engine = Engine(RedisStore(counting, Keys(key_prefix)), MemoryEnqueuer(), clock)
    engine.publish(load_definition(json.dumps(_flow(1))))
    first, second = engine.start_many("flow1", [{}, {}])
    queue = runtime_of(engine).enqueuer
    one, two = queue.pop(), queue.pop()
    store, runtime = store_of(engine), runtime_of(engine)
    assert {one.instance_id, two.instance_id} == {first, second} and store.queued_count() == 2

    def work(node: Any, payload: Any) -> Transition:
        clock.advance(7)  # the step takes 7 s: the next one really starts after it
        return Transition("ok")

    runtime.ride([store.start_rider(two.instance_id, two.node, two.seq, two.attempt, clock, _carrier(engine, two))])
    counting.trips.clear()
    runtime.run_step(one.instance_id, one.node, one.seq, one.attempt, work)
    assert counting.trips == Counter(command=1, pipeline=1)  # its start; its advance with the next start
    started = engine.get(two.instance_id)
    assert started.carrier == _carrier(engine, two) and store.queued_count() == 0
    assert store.started_steps(10)[0].id == two.instance_id
    deadline = counting.zscore(Keys(key_prefix).deadlines, two.instance_id)
    assert deadline == pytest.approx(clock() + TIMEOUT + 5)  # counted from when it was sent, after the 7 s

    counting.trips.clear()
    runtime.run_step(two.instance_id, two.node, two.seq, two.attempt, _ok)
    assert counting.trips == Counter(command=1)  # its advance only: the start was served from the ride
    for iid in (first, second):
        assert engine.get(iid).status is InstanceStatus.SUCCEEDED
        assert [a["outcome"] for a in engine.activities(iid)] == [Outcome.STARTED.value, Outcome.APPLIED.value]


def test_a_ride_goes_with_the_chain_s_last_change_and_is_dropped_when_the_step_ends_otherwise(
        real_redis: redis.Redis, key_prefix: str) -> None:
    clock = ManualClock(1_750_000_000.0)
    engine = Engine(RedisStore(real_redis, Keys(key_prefix)), MemoryEnqueuer(), clock)
    engine.publish(load_definition(json.dumps(_flow(3))))
    engine.start_many("flow3", [{}, {}, {}])
    queue, store, runtime = runtime_of(engine).enqueuer, store_of(engine), runtime_of(engine)
    chained, later, failing = queue.pop(), queue.pop(), queue.pop()
    sent: list[float] = []

    def rider_of(message: Any) -> Rider:
        rider = store.start_rider(message.instance_id, message.node, message.seq, message.attempt, clock,
                                  _carrier(engine, message), lambda: sent.append(clock()))
        return rider

    def slow(node: Any, payload: Any) -> Transition:
        clock.advance(10)
        return Transition("ok")

    runtime.ride([rider_of(later)])
    runtime.run_step(chained.instance_id, chained.node, chained.seq, chained.attempt, slow, lambda node: True)
    assert engine.get(chained.instance_id).status is InstanceStatus.SUCCEEDED
    assert sent == [clock()]  # with the third step's change, after the chain's 30 s, not with the first

    def fails(node: Any, payload: Any) -> Transition:
        raise ActionFailed("no")

    runtime.ride([rider_of(failing)])
    runtime.run_step(later.instance_id, later.node, later.seq, later.attempt, fails)
    runtime.ride(())
    assert len(sent) == 1 and engine.get(failing.instance_id).carrier is None  # a failed step carried nothing
    assert store.queued_count() == 1


def test_a_script_the_server_forgot_is_loaded_and_each_command_sent_again_in_order() -> None:
    client = fakeredis.FakeRedis()
    first = client.register_script("redis.call('RPUSH', KEYS[1], ARGV[1]) return 'first'")
    second = client.register_script("redis.call('RPUSH', KEYS[1], ARGV[1]) return 'second'")
    client.script_flush()
    replies: list[Any] = []
    reply = send_with_riders(client, evalsha(first, ["log"], ["a"]), first,
                             [Rider(lambda: evalsha(second, ["log"], ["b"]), replies.append, second),
                              Rider(lambda: ("LLEN", "log"), replies.append)])
    assert reply == b"first" and replies[0] == b"second" and client.lrange("log", 0, -1) == [b"a", b"b"]
    assert replies[1] == 0  # a command that ran ran where it was sent: before the two sent again


# -- draining with rides --------------------------------------------------------------------------

@pytest.fixture
def celery_app(redis_url: str, key_prefix: str) -> Celery:
    return sender_app(redis_url, f"{key_prefix}:q:", "riders-test")


def _drained_engine(celery_app: Celery, client: redis.Redis, key_prefix: str, limit: int) -> Engine:
    enqueuer = RedisQueueEnqueuer.for_app(celery_app, client)
    engine = Engine(RedisStore(client, Keys(key_prefix)), enqueuer)
    runtime_of(engine).drain = Drain(enqueuer, limit)
    engine.publish(load_definition(json.dumps(_flow(1))))
    return engine


def test_a_drained_step_costs_one_round_trip_and_each_is_applied_once(
        celery_app: Celery, counting: Counting, key_prefix: str) -> None:
    engine = _drained_engine(celery_app, counting, key_prefix, limit=8)
    ids = engine.start_many("flow1", [{} for _ in range(10)])
    counting.trips.clear()
    assert runtime_of(engine).after_delivery("svc", lambda task: task == "svc.work", _ok, None) == 8
    # the first take (two), the first start, then one round trip per step
    assert sum(counting.trips.values()) == 8 + 2
    done = [iid for iid in ids if engine.get(iid).status is InstanceStatus.SUCCEEDED]
    assert len(done) == 8
    for iid in done:
        assert [a["outcome"] for a in engine.activities(iid)] == [Outcome.STARTED.value, Outcome.APPLIED.value]
    assert runtime_of(engine).enqueuer.count(["svc"]) == 2 and store_of(engine).queued_count() == 2


def test_a_worker_stopped_with_a_step_started_by_a_ride_leaves_it_to_the_sweep_and_gives_back_the_rest(
        celery_app: Celery, real_redis: redis.Redis, key_prefix: str) -> None:
    engine = _drained_engine(celery_app, real_redis, key_prefix, limit=8)
    ids = engine.start_many("flow1", [{} for _ in range(5)])
    runtime = runtime_of(engine)
    runtime.process = "host-gone:4242"  # a process whose liveness mark never is (it dies below)
    calls: list[int] = []

    def dies_on_the_second(node: Any, payload: Any) -> Transition:
        calls.append(1)
        if len(calls) == 2:  # started by the first one's ride; the third taken by it, not started
            raise KeyboardInterrupt
        return Transition("ok")

    with pytest.raises(KeyboardInterrupt):
        runtime.after_delivery("svc", lambda task: True, dies_on_the_second, None)
    assert runtime.enqueuer.count(["svc"]) == 3  # the taken-ahead one went back with the two never taken
    assert len(store_of(engine).started_steps(10)) == 1  # the second: started, carried by the dead process
    runtime.process = f"{socket.gethostname()}:{os.getpid()}"
    assert runtime.sweep() == 1  # re-sent as its next attempt within seconds, not at its timeout
    while runtime.after_delivery("svc", lambda task: True, _ok, None):
        pass
    for iid in ids:
        assert engine.get(iid).status is InstanceStatus.SUCCEEDED
        applied = [a for a in engine.activities(iid) if a["outcome"] == Outcome.APPLIED.value]
        assert len(applied) == 1
    assert sorted(a["attempt"] for iid in ids for a in engine.activities(iid)
                  if a["outcome"] == Outcome.APPLIED.value) == [1, 1, 1, 1, 2]


# -- the timers: every wake of a tick in one round trip -------------------------------------------

WAITING = {
    "name": "waiting",
    "start": "nap",
    "nodes": {
        "nap": {"type": "wait", "until": "timestamp('2025-01-01T00:00:00Z')", "next": "s0"},
        "s0": {"type": "service", "service": "svc", "action": "work", "input": {}, "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}
#: Started an hour before the nap's time (a wait whose time has come is passed at once), ticked a minute after.
BEFORE_THE_NAP = 1_735_689_600.0 - 3600
NAP_SECONDS = 3660.0


def test_the_wakes_a_tick_claims_go_to_redis_together_each_its_own_compare_and_set(
        counting: Counting, key_prefix: str) -> None:
    clock = ManualClock(BEFORE_THE_NAP)
    engine = Engine(RedisStore(counting, Keys(key_prefix)), MemoryEnqueuer(), clock)
    engine.publish(load_definition(json.dumps(WAITING)))
    ids = engine.start_many("waiting", [{} for _ in range(20)])
    moved_meanwhile = ids[0]
    engine.cancel(moved_meanwhile)  # its timer is gone with the wait: not claimed
    clock.advance(NAP_SECONDS)
    counting.trips.clear()
    assert runtime_of(engine).tick() == 19
    # the read of the claimed, then the 19 wakes together (their step messages with them); the rest
    # (the data set's check, the claim, the gather tick's looks) is the same whatever the number
    assert counting.trips["pipeline"] == 2 and counting.trips["command"] <= 4
    queue = runtime_of(engine).enqueuer
    assert sorted(m[0].instance_id for m in queue.messages) == sorted(ids[1:])
    for iid in ids[1:]:
        instance = engine.get(iid)
        assert (instance.node, instance.seq, instance.status) == ("s0", 2, InstanceStatus.RUNNING)
        assert [a["outcome"] for a in engine.activities(iid)][-1] == Outcome.WOKE.value
    assert runtime_of(engine).tick() == 0


def test_a_worker_killed_with_a_taken_ahead_message_leaves_it_to_the_reconciliation(
        celery_app: Celery, real_redis: redis.Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _drained_engine(celery_app, real_redis, key_prefix, limit=8)
    ids = engine.start_many("flow1", [{} for _ in range(4)])
    runtime = runtime_of(engine)
    runtime.process = "host-gone:4243"
    monkeypatch.setattr(runtime.drain, "give_back", lambda taken: None)  # killed: nothing given back
    calls: list[int] = []

    def killed_on_the_second(node: Any, payload: Any) -> Transition:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return Transition("ok")

    with pytest.raises(KeyboardInterrupt):
        runtime.after_delivery("svc", lambda task: True, killed_on_the_second, None)
    monkeypatch.undo()
    assert runtime.enqueuer.count(["svc"]) == 1  # the third was taken ahead and is nowhere now
    runtime.process = f"{socket.gethostname()}:{os.getpid()}"
    assert runtime.sweep() == 1  # the second, started by the ride: its process is gone
    assert runtime.reconcile(every=0) == 0  # the third missing once: it may be in a worker's hands
    assert runtime.reconcile(every=0) == 1  # missing twice, still queued: re-sent
    while runtime.after_delivery("svc", lambda task: True, _ok, None):
        pass
    for iid in ids:
        assert engine.get(iid).status is InstanceStatus.SUCCEEDED
        assert len([a for a in engine.activities(iid) if a["outcome"] == Outcome.APPLIED.value]) == 1


def test_wakes_sent_together_after_the_server_forgot_its_scripts_are_each_applied() -> None:
    client = fakeredis.FakeRedis()
    clock = ManualClock(BEFORE_THE_NAP)
    engine = Engine(RedisStore(client, Keys("tf")), MemoryEnqueuer(), clock)
    engine.publish(load_definition(json.dumps(WAITING)))
    ids = engine.start_many("waiting", [{} for _ in range(3)])
    clock.advance(NAP_SECONDS)
    client.script_flush()  # a restart or a failover: every script call answers NOSCRIPT first
    assert runtime_of(engine).tick() == 3
    assert all(engine.get(iid).node == "s0" for iid in ids) and len(runtime_of(engine).enqueuer.messages) == 3
