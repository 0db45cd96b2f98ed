"""Long JSON documents are stored zlib-compressed and read back unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.definitions.validation import load_definition
from engine.instance import Activity, InstanceStatus, Outcome
from engine.service import ActionRegistry, Transition, action, as_transition, ok
from engine.store.codec import dumps, dumps_with
from engine.store.keys import Keys
from engine.store.redis_store import COMPRESS_OVER, NewInstance, Placement, RedisStore, pack, unpack
from engine.testing import Driver, store_of

ACTIONS = ActionRegistry()
LOTS = [{"symbol": f"S{i:03d}", "quantity": i * 3, "cost": i * 10.25, "acquired": "2026-01-02"} for i in range(80)]


@action("pk", "holdings", into=ACTIONS)
def holdings(payload: dict[str, Any]) -> Transition:
    """A big answer, like an account's lots."""
    return Transition("ok", {"lots": LOTS, "note": "x" + payload["tag"]})


FLOW = {"name": "pack", "start": "h", "record": "full", "nodes": {
    "h": {"type": "service", "service": "pk", "action": "holdings", "input": {"tag": "data.tag"},
          "transitions": {"ok": "done"}},
    "done": {"type": "terminal", "status": "succeeded", "result": {"lots": "context.h.lots"}}}}


def test_pack_round_trips_and_compresses_only_long_documents() -> None:
    small, big = {"a": 1}, {"lots": LOTS}
    assert pack(small) == '{"a":1}'
    packed = pack(big)
    assert isinstance(packed, bytes) and packed[:1] == b"x" and len(packed) < len(json.dumps(big)) / 4
    assert json.loads(unpack(packed)) == big
    assert json.loads(unpack(b'"xylophone"')) == "xylophone"  # JSON never starts with x: no confusion
    assert len(json.dumps({"k": "v" * COMPRESS_OVER})) > COMPRESS_OVER


def test_big_context_result_and_records_are_stored_compressed(any_redis: redis.Redis, key_prefix: str) -> None:
    engine = Engine(RedisStore(any_redis, Keys(key_prefix)), MemoryEnqueuer())
    engine.publish(load_definition(json.dumps(FLOW)))
    iid = engine.start("pack", {"tag": "yz"})
    Driver(engine, ACTIONS).run_until_idle()
    instance = engine.get(iid)
    assert instance.status is InstanceStatus.SUCCEEDED
    assert instance.context["h"] == {"lots": LOTS, "note": "xyz"} and instance.result == {"lots": LOTS}
    raw = any_redis.hgetall(store_of(engine).keys.instance(iid))
    assert raw[b"c:h"][:1] == b"x" and raw[b"result"][:1] == b"x"
    assert raw[b"node"] == b"done"  # plain fields stay plain
    records = engine.activities(iid)
    assert records[-1]["received"]["lots"] == LOTS
    stored = any_redis.lrange(store_of(engine).keys.activities(iid), 0, -1)
    assert stored[-1][:1] == b"x" and stored[0][:1] == b"{"


def test_dumps_with_an_encoded_part_gives_the_same_text() -> None:
    part = {"lots": LOTS[:3], "note": "é\u2028", "n": None}
    for record in ({"a": 1, "received": part, "z": [1.5]}, {"received": part}, {"received": part, "z": 2},
                   {"a": "b", "received": part}, {"a": 1, "received": [], "c": {}}):
        assert dumps_with(record, "received", dumps(record["received"])) == dumps(record)


def test_an_answer_is_encoded_once_as_the_store_would() -> None:
    data = {"x": [1, 2.5, "é"], "y": {"z": None, 3: True}}
    answer = ok(data)
    assert answer.encoded == dumps(answer.data) and answer.data == {"x": [1, 2.5, "é"], "y": {"z": None, 3: True}}
    assert as_transition(answer) is answer  # checked once, not again
    plain = as_transition(Transition("ok", data))
    assert plain.encoded == dumps(data) and plain == Transition("ok", data)
    assert as_transition("closed").encoded == "{}" and as_transition(("ok", data)).encoded == dumps(data)


def test_advance_stores_the_same_bytes_with_or_without_the_encoded_answer(any_redis: redis.Redis,
                                                                          key_prefix: str) -> None:
    store = RedisStore(any_redis, Keys(key_prefix))
    started = Activity(seq=0, node="a", attempt=1, outcome=Outcome.STARTED, worker="t", started_at=1.0, ended_at=1.0)
    store.create([NewInstance(iid, "w", 1, "r", {}, 1.0, started, Placement.step("a", 99.0)) for iid in ("i1", "i2")])
    stored = []
    for iid, short in (("i1", False), ("i2", True)):
        answer = ok({"lots": LOTS, "note": iid[:1]})
        data = dict(answer.data)
        record = Activity(seq=1, node="a", attempt=1, outcome=Outcome.APPLIED, worker="t", started_at=1.0,
                          ended_at=2.0, transition="ok", received=data, next="b")
        store.advance(iid, seq=1, activity=record, placement=Placement.step("b", 99.0), context=("a", data),
                      encoded=answer.encoded if short else None)
        stored.append((any_redis.hget(store.keys.instance(iid), "c:a"),
                       any_redis.lrange(store.keys.activities(iid), -1, -1)[0]))
    assert stored[0] == stored[1]
    assert json.loads(unpack(stored[1][1]))["received"] == {"lots": LOTS, "note": "i"}


@pytest.mark.parametrize("deflate", ["isal", "zlib"])
def test_documents_of_every_length_are_compressed_readably_and_no_larger_than_zlib_level_1(
        deflate: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether ISA-L (the dependency) or zlib (without it) deflates: the same stream format, readable
    by any zlib reader and told apart by its first byte, and no larger than zlib's level 1 gives."""
    import zlib

    from engine.store import codec
    from engine.store.codec import SMALL_DEFLATE, compress, load

    if deflate == "zlib":
        monkeypatch.setattr(codec, "_isal_zlib", None)
    elif codec._isal_zlib is None:
        pytest.skip("isal is not installed")
    for count in (4, 10, 30, 60, 200):
        value = {"lots": LOTS[:count] * (1 + count // 80)}
        data = json.dumps(value, separators=(",", ":")).encode()
        packed = pack(value)
        assert isinstance(packed, bytes) and packed[:1] == b"x"
        assert zlib.decompress(packed) == data and load(packed) == value and unpack(packed) == data.decode()
        assert len(packed) <= len(zlib.compress(data, 1)) * 1.02
        if deflate == "zlib" and len(data) > SMALL_DEFLATE:
            assert packed == zlib.compress(data, 1)
        assert compress(data) == packed


def test_streams_any_zlib_wrote_read_back() -> None:
    """Documents an older writer compressed with zlib (any level) read back as they were."""
    import zlib

    from engine.store.codec import decode_instance_hash, load

    value = {"lots": LOTS}
    data = json.dumps(value, separators=(",", ":")).encode()
    for level in (1, 6, 9):
        stored = zlib.compress(data, level)
        assert load(stored) == value and unpack(stored) == data.decode()
        assert decode_instance_hash({b"c:a": stored, b"id": b"i"}) == {"c:a": data, "id": "i"}
