"""A delivered step's start as its delivery's bookkeeping, kombu's ack then in memory only (kombu_riders).

Against kombu's real Redis transport (a real consumer, the broker's key prefix): a release that
moves ``QoS.append``/``ack``/``reject``/``restore_by_tag``, ``Channel.conn_or_acquire``,
``Channel._do_restore_message`` or the prefixed pipeline fails here, not in a worker.
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
from engine.store.riders import Rider
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


def unacked(client: redis.Redis, broker_prefix: str) -> tuple[int, int, int]:
    """kombu's unacknowledged hash and index, and the consumer records beside them."""
    return (client.hlen(f"{broker_prefix}unacked"), client.zcard(f"{broker_prefix}unacked_index"),
            client.hlen(f"{broker_prefix}unacked_consumer"))


def waiting(client: redis.Redis, broker_prefix: str) -> int:
    """Messages waiting in the queue's lists (a message given back goes to one of its priority lists, as kombu's
    restore puts it)."""
    return sum(client.llen(key) for key in client.scan_iter(f"{broker_prefix}{QUEUE}*"))


def test_kombus_layout_is_the_one_the_riders_were_written_for() -> None:
    assert install_worker_patches() and kombu_redis.QoS._tradeflow_riders
    for name in ("append", "ack", "reject", "restore_by_tag", "_remove_from_indices", "pipe_or_acquire"):
        assert callable(getattr(kombu_redis.QoS, name)), name
    for name in ("conn_or_acquire", "_do_restore_message"):
        assert callable(getattr(kombu_redis.Channel, name)), name
    # a prefixed pipeline prefixes an EVALSHA's first key: the start is queued around it
    pipe = kombu_redis.PrefixedRedisPipeline(redis.ConnectionPool(), {}, True, None, global_keyprefix="p:")
    assert pipe._prefix_args(("EVALSHA", "sha", 2, "a", "b"))[3] == "p:a"
    pipe.pipeline_execute_command("EVALSHA", "sha", 2, "a", "b")
    assert pipe.command_stack[-1][0] == ("EVALSHA", "sha", 2, "a", "b")
    assert kombu_riders.rides_in("solo") and not kombu_riders.rides_in("threads")
    assert not kombu_riders.rides_in("prefork") and not kombu_riders.rides_in("no-such-pool")


def test_a_delivered_step_is_started_by_its_delivery_and_nothing_of_it_is_in_kombus_bookkeeping(
        engine: Engine, connection: Connection, real_redis: redis.Redis, broker_prefix: str) -> None:
    iid = engine.start("one", {})
    store, runtime = store_of(engine), runtime_of(engine)
    message = deliver_one(connection, QUEUE)
    tag = message.delivery_tag
    carrier = runtime.carrier("s0", 1, 1)
    # the start was the delivery's bookkeeping: the step is started, carried here, its reply kept
    assert unacked(real_redis, broker_prefix) == (0, 0, 0)
    assert engine.get(iid).carrier == carrier and store.queued_count() == 0
    assert (iid, "s0", 1, 1, carrier) in store._prefetched
    report = runtime.run_step(iid, "s0", 1, 1, _ok)
    assert report.outcome is Outcome.APPLIED and engine.get(iid).status is InstanceStatus.SUCCEEDED
    assert not store._prefetched  # the task's start was the kept reply
    # kombu's ack leaves Redis alone: an entry put there by hand under the tag stays
    real_redis.hset(f"{broker_prefix}unacked", tag, "sentinel")
    message.ack()
    assert real_redis.hget(f"{broker_prefix}unacked", tag) == b"sentinel"
    assert tag in message.channel.qos._dirty  # kombu's in-memory ack still ran
    real_redis.hdel(f"{broker_prefix}unacked", tag)


def test_a_delivery_given_back_goes_back_to_its_queue_and_drops_its_kept_start(
        engine: Engine, connection: Connection, real_redis: redis.Redis, broker_prefix: str) -> None:
    iid = engine.start("one", {})
    store = store_of(engine)
    message = deliver_one(connection, QUEUE)
    assert store._prefetched and waiting(real_redis, broker_prefix) == 0
    message.requeue()  # a reject with requeue, as kombu's restore would: back at the head of its queue
    assert not store._prefetched and unacked(real_redis, broker_prefix) == (0, 0, 0)
    assert waiting(real_redis, broker_prefix) == 1
    again = deliver_one(connection, QUEUE)  # delivered again: started again (a duplicate delivery's start)
    assert again.delivery_info.get("redelivered") or again.headers.get("redelivered")
    assert store._prefetched and engine.get(iid).carrier == runtime_of(engine).carrier("s0", 1, 1)
    again.channel.qos.restore_by_tag(again.delivery_tag)  # a restore at shutdown: the same
    assert not store._prefetched and waiting(real_redis, broker_prefix) == 1
    third = deliver_one(connection, QUEUE)
    third.reject(requeue=False)  # rejected for good: gone, and so is its kept start
    assert not store._prefetched and waiting(real_redis, broker_prefix) == 0
    assert unacked(real_redis, broker_prefix) == (0, 0, 0)


def test_a_start_that_failed_leaves_the_message_to_kombus_bookkeeping(
        engine: Engine, connection: Connection, real_redis: redis.Redis, broker_prefix: str) -> None:
    told: list[Any] = []
    kombu_riders.enable(lambda task, args: (Rider(lambda: ("EVALSHA", "0" * 40, 0), told.append), lambda: None))
    engine.start("one", {})
    message = deliver_one(connection, QUEUE)
    assert len(told) == 1 and isinstance(told[0], redis.exceptions.NoScriptError)  # as after a Redis restart
    assert unacked(real_redis, broker_prefix) == (1, 1, 1)  # kombu holds it until the task's own start
    message.ack()
    assert unacked(real_redis, broker_prefix) == (0, 0, 0)


def test_other_messages_and_a_disabled_ride_keep_kombus_round_trips(
        engine: Engine, celery_app: Celery, connection: Connection, real_redis: redis.Redis,
        broker_prefix: str) -> None:
    celery_app.send_task("svc.other", args=["x", "s0", 1, 1], queue=QUEUE, ignore_result=True)
    message = deliver_one(connection, QUEUE)
    assert unacked(real_redis, broker_prefix) == (1, 1, 1) and not kombu_riders._deliveries
    message.ack()
    kombu_riders.disable()
    engine.start("one", {})
    message = deliver_one(connection, QUEUE)
    assert not store_of(engine)._prefetched and unacked(real_redis, broker_prefix) == (1, 1, 1)
    message.ack()
    assert unacked(real_redis, broker_prefix) == (0, 0, 0)
