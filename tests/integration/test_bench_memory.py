"""The memory benchmark's arithmetic on a real Redis (database 14, a prefix of its own).

Instances are written by hand in the engine's key layout (the key names of ``engine.ops.inspect.Inspector``), with known
payloads, so that every figure of the breakdown can be checked against what was written.
"""

from __future__ import annotations

import json
import zlib

import pytest
import redis

from bench.memory import MemoryProbe, footprint, index_bytes, key_bytes
from engine.api import RunProgress
from engine.ops.inspect import Inspector

RUN = "r1"


def _instance(client: redis.Redis, keys: Inspector, iid: str, status: str, big: int) -> None:
    client.hset(keys.instance(iid), mapping={"id": iid, "status": status, "data": json.dumps({"account_id": iid}),
                                             "c:fetch": json.dumps({"lots": ["x" * 10] * big})})
    client.rpush(keys.activities(iid), json.dumps({"node": "fetch", "seq": 1}),
                 json.dumps({"node": "calc", "seq": 2, "outcome": "noop"}))
    client.sadd(keys.run_status(RUN, status), iid)


def test_footprint_counts_every_field_and_record_as_written(real_redis: redis.Redis, key_prefix: str) -> None:
    keys = Inspector(real_redis, key_prefix)
    _instance(real_redis, keys, "a", "succeeded", 10)
    _instance(real_redis, keys, "b", "succeeded", 30)
    prints = footprint(real_redis, keys, ["a", "b"])
    fetch = [len("c:fetch") + len(json.dumps({"lots": ["x" * 10] * n})) for n in (10, 30)]
    assert prints.fields["c:fetch"] == sum(fetch) / 2
    assert prints.fields["id"] == len("id") + 1
    assert prints.records == 2
    assert set(prints.activity_records) == {"fetch (applied)", "calc (noop)"}
    assert prints.activity_records["calc (noop)"] == len(json.dumps({"node": "calc", "seq": 2, "outcome": "noop"}))
    sizes = key_bytes(real_redis, [keys.instance("a"), keys.instance("b"), keys.activities("a"), keys.activities("b")])
    assert prints.hash_bytes == (sizes[0] + sizes[1]) / 2
    assert prints.activity_bytes == (sizes[2] + sizes[3]) / 2
    assert prints.total == prints.hash_bytes + prints.activity_bytes
    # Redis holds at least the payload; the repetitive lots compress.
    assert prints.hash_bytes > sum(prints.fields.values())
    assert prints.fields_zlib["c:fetch"] < prints.fields["c:fetch"]
    packed = [len(zlib.compress(json.dumps({"lots": ["x" * 10] * n}).encode(), 6)) for n in (10, 30)]
    assert prints.fields_zlib["c:fetch"] == (2 * len("c:fetch") + sum(packed)) / 2


def test_missing_keys_count_zero_and_no_sample_is_empty(real_redis: redis.Redis, key_prefix: str) -> None:
    keys = Inspector(real_redis, key_prefix)
    assert key_bytes(real_redis, [keys.instance("nobody")]) == [0]
    assert footprint(real_redis, keys, []).total == 0


def test_finished_total_is_hash_plus_list_plus_index_share(real_redis: redis.Redis, key_prefix: str) -> None:
    keys = Inspector(real_redis, key_prefix)
    for i in range(6):
        _instance(real_redis, keys, f"f{i}", "succeeded" if i % 3 else "failed", 5 + i)
    _instance(real_redis, keys, "live", "running", 5)
    real_redis.hset(f"{key_prefix}:prop:{RUN}:f1", "body", "y" * 500)
    probe = MemoryProbe(real_redis, keys, RUN, f"{key_prefix}:q:",
                        proposal_key=lambda run, account: f"{key_prefix}:prop:{run}:{account}")
    probe.baseline()
    figures = probe.finish(accounts_started=7)
    fin = figures["per_finished"]
    assert figures["finished"] == 6  # the running one is not finished
    index = index_bytes(real_redis, keys, RUN)
    assert fin["index_bytes"] == index
    assert fin["index_share_bytes"] == round(sum(index.values()) / 6, 1)
    assert fin["total_bytes"] == pytest.approx(fin["hash_bytes"] + fin["activity_list_bytes"]
                                               + sum(index.values()) / 6, abs=0.2)
    # one proposal among six finished instances: a sixth of its bytes each
    proposal = key_bytes(real_redis, [f"{key_prefix}:prop:{RUN}:f1"])[0]
    assert figures["proposal_per_account_bytes"] == round(proposal / 6, 1)


def test_live_sample_waits_for_half_the_run_and_counts_live_instances_only(real_redis: redis.Redis,
                                                                          key_prefix: str) -> None:
    keys = Inspector(real_redis, key_prefix)
    _instance(real_redis, keys, "done", "succeeded", 5)
    _instance(real_redis, keys, "w", "waiting", 5)
    _instance(real_redis, keys, "r", "running", 50)
    real_redis.rpush(f"{key_prefix}:q:order_calc", "m" * 300)
    probe = MemoryProbe(real_redis, keys, RUN, f"{key_prefix}:q:")
    probe.observe(RunProgress(RUN, {"succeeded": 1, "running": 1, "waiting": 1}, 3, None))
    assert probe.live is None  # one of three finished: not yet mid-run
    probe.observe(RunProgress(RUN, {"succeeded": 2, "running": 1}, 3, None))
    live = probe.live
    assert live is not None and live["live_when_sampled"] == 2 and live["sampled"] == 2
    assert live["hash_bytes"] == round(sum(key_bytes(real_redis, [keys.instance("w"), keys.instance("r")])) / 2, 1)
    assert live["broker_share_bytes"] == round(key_bytes(real_redis, [f"{key_prefix}:q:order_calc"])[0] / 2, 1)
    assert live["total_bytes"] == pytest.approx(live["hash_bytes"] + live["activity_list_bytes"]
                                                + live["index_share_bytes"] + live["broker_share_bytes"], abs=0.3)
