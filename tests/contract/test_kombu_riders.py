"""A delivered step's start riding kombu's bookkeeping, its ack riding the step's change (kombu_riders).

Against kombu's real Redis transport (a real consumer, the broker's key prefix): a release that
moves ``QoS.append``/``ack``/``reject``/``restore_by_tag``, ``_remove_from_indices`` or the
prefixed pipeline fails here, not in a worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection
from kombu.transport import redis as kombu_redis

from engine.api import Engine
from engine.app import delivery_starts
from engine.broker import RedisQueueEnqueuer, install_worker_patches, kombu_riders
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus, Outcome
from engine.service import Transition
from engine.testing import make_store, runtime_of, store_of
from tests.contract.kombu_delivery import deliver_one

QUEUE = "svc"
FLOW = {"name": "one", "start": "s0", "nodes": {
    "s0": {"type": "service", "service": "svc", "action": "work", "input": {}, "timeout_seconds": 60,
           "transitions": {"ok": "done"}},
    "done": {"type": "terminal", "status": "succeeded"}}}




@pytest.fixture
def engine(celery_app: Celery, real_redis: redis.Redis, key_prefix: str) -> Iterator[Engine]:
    """An engine whose broker is the state's Redis, its start builder given to kombu_riders."""
    engine = Engine(make_store(real_redis, key_prefix), RedisQueueEnqueuer.for_app(celery_app, real_redis))
    engine.publish(load_definition(json.dumps(FLOW)))
    assert install_worker_patches()
    kombu_riders.enable(delivery_starts(lambda: runtime_of(engine), frozenset({"svc.work"})))
    try:
        yield engine
    finally:
        kombu_riders.disable()



def _ok(node: Any, payload: Any) -> Transition:
    return Transition("ok")


def test_kombus_layout_is_the_one_the_riders_were_written_for() -> None:
    assert install_worker_patches() and kombu_redis.QoS._tradeflow_riders
    for name in ("append", "ack", "reject", "restore_by_tag", "_remove_from_indices", "pipe_or_acquire"):
        assert callable(getattr(kombu_redis.QoS, name)), name
    # a prefixed pipeline prefixes an EVALSHA's first key: the start is queued around it
    pipe = kombu_redis.PrefixedRedisPipeline(redis.ConnectionPool(), {}, True, None, global_keyprefix="p:")
    assert pipe._prefix_args(("EVALSHA", "sha", 2, "a", "b"))[3] == "p:a"
    pipe.pipeline_execute_command("EVALSHA", "sha", 2, "a", "b")
    assert pipe.command_stack[-1][0] == ("EVALSHA", "sha", 2, "a", "b")
    assert kombu_riders.rides_in("solo") and not kombu_riders.rides_in("threads")
    assert not kombu_riders.rides_in("prefork") and not kombu_riders.rides_in("no-such-pool")


def test_the_ack_commands_are_kombus_own_under_the_broker_prefix(connection: Connection, broker_prefix: str) -> None:
    install_worker_patches()
    qos = connection.channel().qos
    assert kombu_riders.ack_commands(qos, "tag-1") == [
        ("ZREM", f"{broker_prefix}unacked_index", "tag-1"), ("HDEL", f"{broker_prefix}unacked", "tag-1"),
        ("HDEL", f"{broker_prefix}unacked_consumer", "tag-1")]


def test_a_delivered_step_starts_with_its_delivery_and_is_acked_with_its_change(
        engine: Engine, connection: Connection, real_redis: redis.Redis, broker_prefix: str) -> None:
    iid = engine.start("one", {})
    store, runtime = store_of(engine), runtime_of(engine)
    message = deliver_one(connection, QUEUE)
    tag = message.delivery_tag
    carrier = runtime.carrier("s0", 1, 1)
    # the start rode kombu's bookkeeping: the step is started, carried here, its reply kept
    assert real_redis.hexists(f"{broker_prefix}unacked", tag)
    assert engine.get(iid).carrier == carrier and store.queued_count() == 0
    assert (iid, "s0", 1, 1, carrier) in store._prefetched
    acking = kombu_riders.ack_riders(tag)
    assert len(acking) == 3
    runtime.ride(acking)
    report = runtime.run_step(iid, "s0", 1, 1, _ok)
    assert report.outcome is Outcome.APPLIED and engine.get(iid).status is InstanceStatus.SUCCEEDED
    assert not store._prefetched  # the task's start was the kept reply
    assert real_redis.hlen(f"{broker_prefix}unacked") == 0 and real_redis.zcard(f"{broker_prefix}unacked_index") == 0
    assert real_redis.hlen(f"{broker_prefix}unacked_consumer") == 0
    # kombu's own ack skips Redis now: an entry put back by hand under the tag stays
    real_redis.hset(f"{broker_prefix}unacked", tag, "sentinel")
    message.ack()
    assert real_redis.hget(f"{broker_prefix}unacked", tag) == b"sentinel"
    assert tag in message.channel.qos._dirty  # kombu's in-memory ack still ran
    real_redis.hdel(f"{broker_prefix}unacked", tag)


def test_an_ack_that_did_not_ride_is_kombus_and_a_given_back_delivery_drops_its_kept_start(
        engine: Engine, connection: Connection, real_redis: redis.Redis, broker_prefix: str) -> None:
    iid = engine.start("one", {})
    store = store_of(engine)
    message = deliver_one(connection, QUEUE)
    assert store._prefetched
    message.requeue()  # shutdown gives it back (kombu's restore): the kept start goes
    assert not store._prefetched and real_redis.hlen(f"{broker_prefix}unacked") == 0
    again = deliver_one(connection, QUEUE)  # delivered again: started again (a duplicate delivery's start)
    assert store._prefetched and engine.get(iid).carrier == runtime_of(engine).carrier("s0", 1, 1)
    again.ack()  # no change carried its ack: kombu's own
    assert not store._prefetched and real_redis.hlen(f"{broker_prefix}unacked") == 0
    assert real_redis.zcard(f"{broker_prefix}unacked_index") == 0


def test_other_messages_and_a_disabled_ride_keep_kombus_round_trips(
        engine: Engine, celery_app: Celery, connection: Connection, real_redis: redis.Redis,
        broker_prefix: str) -> None:
    celery_app.send_task("svc.other", args=["x", "s0", 1, 1], queue=QUEUE, ignore_result=True)
    message = deliver_one(connection, QUEUE)
    assert kombu_riders.ack_riders(message.delivery_tag) == []
    message.ack()
    kombu_riders.disable()
    engine.start("one", {})
    message = deliver_one(connection, QUEUE)
    assert not store_of(engine)._prefetched and kombu_riders.ack_riders(message.delivery_tag) == []
    message.ack()
    assert real_redis.hlen(f"{broker_prefix}unacked") == 0
