"""``create`` of many instances: one ``create_many`` call of ``lua/state.lua`` per batch, on fakeredis and a real Redis.

Each instance of a batch must be written exactly as the single ``create`` operation writes it
(hash, activity list, indexes, run status sets, gather batch, first message): the tests write
the same instances both ways under two key prefixes and compare every key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from engine.instance import Activity, InstanceStatus, Outcome
from engine.store.codec import pack, seconds, unpack
from engine.store.keys import Keys
from engine.store.redis_store import Envelope, NewInstance, Placement, RedisStore

NOW = 1_750_000_000.123456


@pytest.fixture
def stores(any_redis: redis.Redis, key_prefix: str) -> Iterator[tuple[RedisStore, RedisStore]]:
    """Two stores on one Redis: ``single`` (written with ``create`` one by one) and ``many``."""
    yield (RedisStore(any_redis, Keys(f"{key_prefix}-single"), retention_seconds=3600),
           RedisStore(any_redis, Keys(f"{key_prefix}-many"), retention_seconds=3600))


def started(seq: int = 0, **fields: Any) -> Activity:
    return Activity(seq=seq, node="start", attempt=1, outcome=Outcome.STARTED, worker="test", started_at=NOW,
                    ended_at=NOW, **fields)


def gather_doc(name: str) -> dict[str, Any]:
    return {"name": name, "group": "g", "close_at": repr(NOW + 600), "close_early": True, "service": "svc",
            "action": "total", "node": "meet", "workflow": "w", "version": 1}


def instances(queue: str) -> list[NewInstance]:
    """One of each kind of start: a step with its message, a wait, an await, a gather, a failure, an end."""
    now = NOW + 1
    return [
        NewInstance("step", "w", 1, "r1", {"k": 1}, now, started(next="a"), Placement.queued_step("a", 60),
                    send=Envelope(queue, "message-of-step")),
        NewInstance("wait", "w", 1, "r1", {"k": 2, "big": "x" * 400}, now, started(next="nap"),
                    Placement.wait("nap", NOW + 600)),
        NewInstance("await", "w", 1, "r1", {}, now, started(next="gate"), Placement.awaiting("gate", None)),
        NewInstance("gather1", "w", 1, "r1", {"k": 3}, now, started(next="meet"),
                    Placement.gathering("meet", gather_doc("svc.total:g"), {"amount": 3})),
        NewInstance("gather2", "w", 1, "r1", {"k": 4}, now, started(next="meet"),
                    Placement.gathering("meet", gather_doc("svc.total:g"), {"amount": 4})),
        NewInstance("bad", "w", 1, "r1", {"acct": 1}, now, started(error="invalid input"),
                    Placement.end("start", InstanceStatus.FAILED),
                    error={"node": "start", "reason": "invalid input: 'account' is required", "attempt": 0}),
        NewInstance("done", "w", 1, "r2", {"k": 5}, now, started(next="end"),
                    Placement.end("end", InstanceStatus.SUCCEEDED, result={"ok": True})),
    ]


def create_one_by_one(store: RedisStore, batch: list[NewInstance]) -> list[bool]:
    """What ``create`` wrote before ``create_many``: the single operation, once per instance."""
    out = []
    for new in batch:
        doc = {"id": new.id, "workflow": new.workflow, "version": new.version, "run": new.run,
               "now": seconds(new.created_at), "place": new.placement}
        docs: dict[str, Any] = {"data": pack(new.data), "activity": pack(new.activity.to_dict())}
        if new.error is not None:
            docs["error"] = pack(new.error)
        out.append(store._call("create", new.id, doc, docs, new.send)[0] in (b"created", "created"))
    return out


def snapshot(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` (named without it) and its content; the queued index's scores (wall-clock
    times of sending) as present, not as values."""
    out: dict[str, Any] = {}
    for raw in client.scan_iter(f"{prefix}:*"):
        key = raw.decode()
        name = key[len(prefix):]
        kind = client.type(key).decode()
        if kind == "hash":
            value: Any = {k.decode(): _text(v) for k, v in client.hgetall(key).items()}
        elif kind == "list":
            value = [_text(v) for v in client.lrange(key, 0, -1)]
        elif kind == "set":
            value = sorted(v.decode() for v in client.smembers(key))
        elif kind == "zset":
            value = [(m.decode(), None if name.endswith(":queued") else s)
                     for m, s in client.zrange(key, 0, -1, withscores=True)]
        else:
            value = _text(client.get(key))
        out[name] = (kind, value, client.ttl(key) > 0)
    return out


def _text(raw: bytes) -> str:
    return unpack(raw) if raw[:1] in (b"x", b"{", b"[", b'"') else raw.decode()


def test_each_instance_is_written_as_create_alone_writes_it(stores: tuple[RedisStore, RedisStore]) -> None:
    single, many = stores
    one = create_one_by_one(single, instances(f"{single.keys.prefix}:queue"))
    both = many.create(instances(f"{many.keys.prefix}:queue"))
    assert one == both == [True] * 7
    expected = snapshot(single.client, single.keys.prefix)
    got = snapshot(many.client, many.keys.prefix)
    assert got == expected
    assert got[":queue"][1] == ["message-of-step"] and got[":{bad}"][2]  # failed at once: expires
    assert ":batch:svc.total:g#1" in got and got[":batch:svc.total:g#1:members"][1] == ["gather1", "gather2"]


def test_existing_ids_are_left_alone_in_later_batches_and_within_one(stores: tuple[RedisStore, RedisStore]) -> None:
    _, store = stores
    queue = f"{store.keys.prefix}:queue"
    assert store.create([NewInstance("a", "w", 1, "r1", {"v": 1}, NOW, started(next="nap"),
                                     Placement.wait("nap", NOW + 60))]) == [True]
    again = [NewInstance(iid, "w", 1, "r1", {"v": 2}, NOW + 1, started(next="a"), Placement.queued_step("a", 60),
                         send=Envelope(queue, f"message-{iid}-{n}"))
             for n, iid in enumerate(["a", "b", "b", "c"])]
    assert store.create(again, batch=2) == [False, True, False, True]
    a = store.load("a")
    assert a and a.status is InstanceStatus.WAITING and a.data == {"v": 1} and len(store.activities("a")) == 1
    assert store.client.lrange(queue, 0, -1) == [b"message-c-3", b"message-b-1"]  # only the created ones' messages
    runs = store.client.smembers(store.keys.run_status("r1", "running"))
    assert runs == {b"b", b"c"}


def test_a_failed_start_keeps_its_reason_and_is_counted_failed(stores: tuple[RedisStore, RedisStore]) -> None:
    _, store = stores
    bad = NewInstance("bad", "w", 1, "r1", {"acct": 1}, NOW, started(error="no account"),
                      Placement.end("start", InstanceStatus.FAILED),
                      error={"node": "start", "reason": "invalid input: no account", "type": "InvalidInput"})
    assert store.create([bad]) == [True]
    instance = store.load("bad")
    assert instance and instance.status is InstanceStatus.FAILED and instance.error is not None
    assert instance.error["reason"] == "invalid input: no account" and instance.finished_at == NOW
    assert store.activities("bad")[0]["error"] == "no account"
    assert store.run_counts("r1")["failed"] == 1 and 0 < store.ttl("bad") <= 3600


def test_instances_of_other_runs_and_versions_in_one_batch_keep_their_own(
        stores: tuple[RedisStore, RedisStore]) -> None:
    _, store = stores
    batch = [NewInstance(f"i{n}", "w" if n % 2 else "v", 1 + n % 3, f"run{n % 2}", {}, NOW + n, started(next="nap"),
                         Placement.wait("nap", NOW + 60)) for n in range(6)]
    assert store.create(batch, batch=4) == [True] * 6
    for n in range(6):
        instance = store.load(f"i{n}")
        assert instance and (instance.workflow, instance.version, instance.run) == (
            "w" if n % 2 else "v", 1 + n % 3, f"run{n % 2}")
        assert instance.created_at == NOW + n
    assert store.run_counts("run0")["waiting"] == 3 and store.run_counts("run1")["waiting"] == 3


def test_nothing_to_create_is_no_call(stores: tuple[RedisStore, RedisStore]) -> None:
    _, store = stores
    assert store.create([]) == []


def test_a_large_batch_around_an_item_written_alone_keeps_every_order(stores: tuple[RedisStore, RedisStore]) -> None:
    """Live instances' run-set, index and queue entries are written together (in calls of at most 1,000
    values), flushed before an item that ``create`` writes alone: the queue's order is the items' order."""
    single, many = stores

    def batch(store: RedisStore) -> list[NewInstance]:
        queue, now = f"{store.keys.prefix}:queue", NOW + 1
        steps = [NewInstance(f"s{n}", "w", 1, "r1", {"n": n}, now, started(next="a"),
                             Placement.queued_step("a", 60) if n % 3 else Placement.step("a", NOW + 60),
                             send=Envelope(queue, f"message-{n}")) for n in range(1200)]
        meet = NewInstance("meet", "w", 1, "r1", {}, now, started(next="meet"),
                           Placement.gathering("meet", gather_doc("svc.total:g"), {"amount": 1}))
        return [*steps[:100], meet, *steps[100:]]

    one = create_one_by_one(single, batch(single))
    assert many.create(batch(many), batch=1201) == one == [True] * 1201
    got, expected = snapshot(many.client, many.keys.prefix), snapshot(single.client, single.keys.prefix)
    for taken in (got, expected):  # (sent at one wall-clock moment, or each at its own: members alike)
        kind, members, expires = taken[":queued"]
        taken[":queued"] = (kind, sorted(members), expires)
    assert got == expected
    assert got[":queue"][1] == [f"message-{n}" for n in reversed(range(1200))]
    assert len(got[":run:r1:running"][1]) == 1200 and len(got[":deadlines"][1]) == 400
