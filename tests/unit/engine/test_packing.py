"""Long JSON documents are stored zlib-compressed and read back unchanged."""

from __future__ import annotations

import json
from typing import Any

import redis

from engine.api import Engine
from engine.definitions.validation import load_definition
from engine.model import InstanceStatus
from engine.runtime.messages import MemoryEnqueuer
from engine.service import ActionRegistry, Transition, action
from engine.store.keys import Keys
from engine.store.redis_store import COMPRESS_OVER, RedisStore, pack, unpack
from engine.testing import Driver

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
    raw = any_redis.hgetall(engine.store.keys.instance(iid))
    assert raw[b"c:h"][:1] == b"x" and raw[b"result"][:1] == b"x"
    assert raw[b"node"] == b"done"  # plain fields stay plain
    records = engine.activities(iid)
    assert records[-1]["received"]["lots"] == LOTS
    stored = any_redis.lrange(engine.store.keys.activities(iid), 0, -1)
    assert stored[-1][:1] == b"x" and stored[0][:1] == b"{"
