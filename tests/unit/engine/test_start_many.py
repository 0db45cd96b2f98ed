"""``Engine.start_many`` in batches, on fakeredis and on a real Redis.

Pins what starting many instances at once must keep from starting them one by one: each
instance's outcome (where it goes, when its wait ends, why it failed) is what its own data,
id and start time give, however many instances share the start's resolution; invalid items
fail with their reason; existing ids are not started again; the run counts what was created;
first steps go out at PRIORITY_START, with their instance (the Redis broker) or after it;
batches are written in order, and a start reaching a gather joins its batch.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from engine.api import Engine, StartItem
from engine.broker import PRIORITY_START, MemoryEnqueuer, RedisQueueEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus
from engine.runtime.starting import StartResolver, _frozen, start_expressions
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import enqueuer_of, runtime_of, store_of

T0 = 1_750_000_000.0

CHOOSY = {  # the start's outcome depends on data, on the instance's id and (one branch) on now()
    "name": "choosy",
    "initial_data": {"type": "object"},
    "parameters": {"hour": "10:00"},
    "start": "route",
    "nodes": {
        "route": {"type": "choice", "choices": [
            {"when": "has(data.go) && data.go == true", "next": "work"},
            {"when": "instance.id.startsWith('now-')", "next": "soon"},
            {"when": "has(data.gate)", "next": "gate"}], "default": "nap"},
        "nap": {"type": "wait", "until": "at(data.day, params.hour, 'UTC')", "next": "work"},
        "soon": {"type": "wait", "until": "now() + duration('90m')", "next": "work"},
        "gate": {"type": "await", "signals": {"go": "work"}, "timeout": "timestamp(data.gate)",
                 "on_timeout": "done"},
        "work": {"type": "service", "service": "svc", "action": "do", "input": {"x": "data"},
                 "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}
STRICT = {
    "name": "strict",
    "initial_data": {"type": "object", "required": ["account"], "additionalProperties": False,
                     "properties": {"account": {"type": "string", "minLength": 1}}},
    "start": "work",
    "nodes": {"work": {"type": "service", "service": "svc", "action": "do", "input": {"a": "data.account"},
                       "transitions": {"ok": "done"}},
              "done": {"type": "terminal", "status": "succeeded"}},
}
MEETING = {
    "name": "meeting",
    "initial_data": {"type": "object", "required": ["amount"]},
    "start": "meet",
    "nodes": {
        "meet": {"type": "gather", "service": "svc", "action": "total", "group": "instance.run",
                 "close": "timestamp('2025-06-15T16:00:00Z')", "input": {"amount": "data.amount"},
                 "transitions": {"ok": "done"}, "timeout_seconds": 60},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}


class TickingClock(ManualClock):
    """Moves on a millisecond at every reading: no two instances start at the same time."""

    def __call__(self) -> float:
        self.advance(0.001)
        return super().__call__()


@pytest.fixture
def engine(any_redis: redis.Redis, key_prefix: str) -> Engine:
    eng = Engine(RedisStore(any_redis, Keys(key_prefix), retention_seconds=3600), MemoryEnqueuer(), ManualClock(T0))
    for body in (CHOOSY, STRICT, MEETING):
        eng.publish(load_definition(json.dumps(body)))
    return eng


def outcome(engine: Engine, iid: str) -> tuple[Any, ...]:
    instance = engine.get(iid)
    error = instance.error["reason"] if instance.error else None
    return instance.status, instance.node, instance.wake_at, error, instance.created_at


CHOOSY_ITEMS = [
    *[StartItem({"day": day}, f"a{n}-{day}") for n in range(3) for day in ("2026-11-25", "2026-11-26")],
    StartItem({"go": True}, "go-1"), StartItem({"go": 1}, "go-2"), StartItem({"go": 1.0}, "go-3"),
    StartItem({"go": True, "day": "x"}, "go-4"), StartItem({"go": False, "day": "2026-11-25"}, "go-5"),
    StartItem({"day": "2026-11-25"}, "now-1"), StartItem({"day": "2026-11-25"}, "now-2"),
    StartItem({"gate": "2026-11-25T10:00:00Z"}, "gate-1"), StartItem({"gate": "2026-11-25T11:00:00Z"}, "gate-2"),
    StartItem({"gate": "soon"}, "gate-3"), StartItem({"gate": "soon"}, "gate-4"),
    StartItem({"day": "not a day"}, "bad-1"), StartItem({"day": "not a day"}, "bad-2"), StartItem({}, "bad-3"),
    StartItem({"day": {"nested": [1, {"x": None}]}}, "bad-4"),
]


@pytest.mark.parametrize("ticking", [False, True])
def test_each_instance_gets_what_it_would_get_started_alone(engine: Engine, ticking: bool) -> None:
    if ticking:
        engine.clock = runtime_of(engine).clock = TickingClock(T0)
    together = engine.start_many("choosy", CHOOSY_ITEMS, run="together", batch=4)
    alone = [engine.start("choosy", item.data, instance_id=f"alone-{item.instance_id}", run="alone")
             if item.instance_id and not item.instance_id.startswith("now-") else None for item in CHOOSY_ITEMS]
    for iid, single in zip(together, alone, strict=True):
        if single is not None:
            mine, theirs = outcome(engine, iid), outcome(engine, single)
            assert mine[:4] == theirs[:4], iid
    by_id = {iid: outcome(engine, iid) for iid in together}
    assert by_id["a0-2026-11-25"][:3] == (InstanceStatus.WAITING, "nap", 1_795_600_800.0)
    assert by_id["a2-2026-11-26"][2] == 1_795_687_200.0
    assert [by_id[f"go-{n}"][:2] for n in range(1, 6)] == [
        (InstanceStatus.RUNNING, "work"), (InstanceStatus.FAILED, "route"), (InstanceStatus.FAILED, "route"),
        (InstanceStatus.RUNNING, "work"), (InstanceStatus.WAITING, "nap")]
    for n in (1, 2):  # now(): each instance's own start time
        status, node, wake_at, _, created_at = by_id[f"now-{n}"]
        assert (status, node) == (InstanceStatus.WAITING, "soon")
        assert wake_at == pytest.approx(created_at + 5400, abs=1e-5)
    assert ticking is (by_id["now-1"][2] != by_id["now-2"][2])
    assert by_id["gate-1"][:3] == (InstanceStatus.AWAITING, "gate", 1_795_600_800.0)
    assert by_id["gate-2"][2] == 1_795_604_400.0
    for iid in ("gate-3", "gate-4", "bad-1", "bad-2", "bad-3", "bad-4"):
        assert by_id[iid][0] is InstanceStatus.FAILED and by_id[iid][3].startswith("invalid input: node"), iid
    assert "no such key" in by_id["bad-3"][3] and by_id["bad-1"][3] == by_id["bad-2"][3]


def test_invalid_items_fail_with_their_reason_and_the_others_start(engine: Engine) -> None:
    items = [{"account": f"A{n}"} if n % 3 else {"acct": n} for n in range(10)]
    ids = engine.start_many("strict", items, run="r", batch=4)
    assert len(ids) == len(set(ids)) == 10
    for n, iid in enumerate(ids):
        instance = engine.get(iid)
        if n % 3:
            assert instance.status is InstanceStatus.RUNNING and instance.data == {"account": f"A{n}"}
        else:
            assert instance.status is InstanceStatus.FAILED and instance.error is not None
            assert instance.error["type"] == "InvalidInput" and "'account' is a required property" in \
                instance.error["reason"] and "'acct' was unexpected" in instance.error["reason"]
            assert engine.activities(iid)[0]["outcome"] == "failed"
    assert engine.progress("r").counts["failed"] == 4 and engine.progress("r").total == 10


def test_batches_go_in_order_with_first_steps_at_start_priority_and_existing_ids_are_kept(engine: Engine) -> None:
    assert isinstance(enqueuer_of(engine), MemoryEnqueuer)
    seen: list[int] = []
    items = [StartItem({"account": f"A{n}"}, f"id-{n}") for n in range(10)]
    assert engine.start_many("strict", items, run="r", batch=3, progress=seen.append) == [f"id-{n}" for n in range(10)]
    assert seen == [3, 3, 3, 1]
    sent = [(message.instance_id, priority) for message, priority in enqueuer_of(engine).messages]
    assert sent == [(f"id-{n}", PRIORITY_START) for n in range(10)]
    again = [StartItem({"account": "changed"}, f"id-{n}") for n in range(8, 12)]
    assert engine.start_many("strict", again, run="r", batch=3) == ["id-8", "id-9", "id-10", "id-11"]
    assert [message.instance_id for message, _ in enqueuer_of(engine).messages[10:]] == ["id-10", "id-11"]
    assert engine.get("id-9").data == {"account": "A9"}
    progress = engine.progress("r")
    assert progress.total == 12 and progress.counts["running"] == 12
    more = [StartItem({"account": f"B{n}"}, f"id-{n}") for n in range(10, 14)]
    assert engine.start_many("strict", more, run="r", batch=3, created_only=True) == ["id-12", "id-13"]
    assert engine.get("id-11").data == {"account": "changed"} and engine.progress("r").total == 14


def test_a_batch_redis_refused_stops_the_start_with_its_error_after_the_batches_before_it(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    store, calls = store_of(engine), []
    create = store.create

    def third_refused(news: Any) -> Any:  # runs in the start's sender thread while the next batch is built
        calls.append(len(news))
        if len(calls) == 3:
            raise redis.ConnectionError("Redis went away")
        return create(news)

    monkeypatch.setattr(store, "create", third_refused)
    seen: list[int] = []
    items = [StartItem({"account": f"A{n}"}, f"id-{n}") for n in range(20)]
    with pytest.raises(redis.ConnectionError, match="went away"):
        engine.start_many("strict", items, run="r", batch=4, progress=seen.append)
    assert seen == [4, 4] and calls == [4, 4, 4]  # nothing sent after the refused batch
    assert engine.progress("r").total == 8 and engine.get("id-7").data == {"account": "A7"}
    assert engine.start_many("strict", items, run="r", batch=4, created_only=True) == [f"id-{n}" for n in range(8, 20)]


def test_first_steps_go_with_their_instances_on_the_redis_broker(any_redis: redis.Redis, key_prefix: str) -> None:
    enqueuer = RedisQueueEnqueuer(any_redis, f"{key_prefix}:q:")
    engine = Engine(RedisStore(any_redis, Keys(key_prefix), retention_seconds=3600), enqueuer, ManualClock(T0))
    engine.publish(load_definition(json.dumps(STRICT)))
    ids = engine.start_many("strict", [{"account": f"A{n}"} for n in range(7)] + [{"bad": 1}], run="r", batch=3)
    key = enqueuer.queue_key("svc", PRIORITY_START)
    bodies = [json.loads(raw) for raw in any_redis.lrange(key, 0, -1)]
    assert len(bodies) == 7 and enqueuer.count(["svc"]) == 7  # one per started instance, none for the failed one
    assert {body["headers"]["argsrepr"] for body in bodies} == {repr(runtime_of(engine).message(
        engine.definition("strict"), iid, "work", 1, 1).args) for iid in ids[:7]}
    assert engine.start_many("strict", [StartItem({"account": "A0"}, ids[0])], run="r") == [ids[0]]
    assert any_redis.llen(key) == 7 and engine.progress("r").total == 8


def test_a_start_at_a_gather_joins_its_batch(engine: Engine) -> None:
    assert not StartResolver(engine.definition("meeting")).keyed  # reads Redis: each arrival resolved anew
    ids = engine.start_many("meeting", [{"amount": n} for n in range(5)] + [{}], run="m", batch=2)
    counts = engine.progress("m").counts
    assert counts["gathering"] == 5 and counts["failed"] == 1
    batch_id = engine.get(ids[0]).batch or ""
    assert {engine.get(iid).batch for iid in ids[:5]} == {batch_id}
    assert sorted(iid for iid, _ in store_of(engine).batch_contributions(batch_id)) == sorted(ids[:5])
    assert engine.get(ids[5]).error is not None


def test_start_expressions_and_what_keys_an_outcome() -> None:
    choosy = load_definition(json.dumps(CHOOSY))
    found = start_expressions(choosy)
    assert found is not None and {e.source for e in found} == {
        "has(data.go) && data.go == true", "instance.id.startsWith('now-')", "has(data.gate)",
        "at(data.day, params.hour, 'UTC')", "now() + duration('90m')", "timestamp(data.gate)"}
    resolver: StartResolver[str] = StartResolver(choosy)
    assert resolver.keyed and resolver.timed
    assert resolver.reads == {"data": {"go": None, "gate": None, "day": None}, "instance": {"id": None}}
    assert start_expressions(load_definition(json.dumps(MEETING))) is None
    assert len({_frozen(v) for v in (1, 1.0, True, "1", None, 0.0, -0.0, [1], (1,), {"a": 1})}) == 9
    with pytest.raises(Exception, match="bytes"):
        _frozen(b"x")
    calls: list[int] = []

    def work() -> str:
        calls.append(1)
        return "out"

    root = {"id": "i1", "node": "route"}
    assert resolver.resolve({"day": "d", "other": 1}, root, T0, work) == "out"
    assert resolver.resolve({"day": "d", "other": 2}, root, T0, work) == "out" and len(calls) == 1
    resolver.resolve({"day": "d"}, root, T0 + 1, work)  # another now
    resolver.resolve({"day": "d"}, {"id": "i2"}, T0, work)  # another id
    resolver.resolve({"day": b"raw"}, root, T0, work)  # not keyable: worked out every time
    resolver.resolve({"day": b"raw"}, root, T0, work)
    assert len(calls) == 5

