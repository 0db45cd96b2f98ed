"""Retention: a definition's ``retention_days``, run keys that expire with their last instance, and the
housekeeping that trims the global indexes -- each on fakeredis and on a real Redis.

TTLs run on the server's clock (fakeredis: the wall clock), so the tests that watch keys vanish
use retentions of a second or two and wait for them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis

from engine.definitions.validation import load_definition
from engine.instance import Activity, InstanceStatus, Outcome
from engine.store.keys import Keys
from engine.store.redis_store import NewInstance, Placement, RedisStore

NOW = 1_750_000_000.0
RUN = "r1"


@pytest.fixture
def store(any_redis: redis.Redis, key_prefix: str) -> Iterator[RedisStore]:
    """A store on its own key prefix, with a one-hour global retention."""
    yield RedisStore(any_redis, Keys(key_prefix), retention_seconds=3600)


def publish(store: RedisStore, name: str, retention_days: float | None = None) -> int:
    body = {"name": name, "start": "a", "nodes": {"a": {"type": "terminal", "status": "succeeded"}}}
    if retention_days is not None:
        body["retention_days"] = retention_days
    version, _ = store.publish(load_definition(json.dumps(body)))
    return version


def new(iid: str, workflow: str, placement: Placement, run: str = RUN) -> NewInstance:
    started = Activity(seq=0, node="a", attempt=1, outcome=Outcome.STARTED, worker="t", started_at=NOW, ended_at=NOW)
    return NewInstance(iid, workflow, 1, run, {"k": 1}, NOW, started, placement)


def finish(store: RedisStore, iid: str, status: InstanceStatus = InstanceStatus.SUCCEEDED) -> None:
    done = Activity(seq=1, node="a", attempt=1, outcome=Outcome.APPLIED, worker="t", started_at=NOW, ended_at=NOW)
    assert store.advance(iid, seq=1, activity=done, placement=Placement.end("done", status)).applied


def keys_of(store: RedisStore) -> set[str]:
    return {k.decode() for k in store.client.scan_iter(match=f"{store.keys.prefix}:*", count=1000)}


def instance_keys(store: RedisStore) -> set[str]:
    """Every key but the definitions' (which never expire)."""
    return {k for k in keys_of(store) if not k.startswith((f"{store.keys.prefix}:def", f"{store.keys.prefix}:defs"))}


def wait_until(check, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return check()


def test_a_definitions_retention_is_the_ttl_of_its_finished_instances(store: RedisStore) -> None:
    publish(store, "short", retention_days=60 / 86400)
    publish(store, "plain")
    store.create([new("s1", "short", Placement.step("a", NOW + 60)), new("p1", "plain", Placement.step("a", NOW + 60)),
                  new("s2", "short", Placement.end("a", InstanceStatus.FAILED))])
    assert store.ttl("s1") == -1 and 0 < store.ttl("s2") <= 60  # only finished ones expire
    finish(store, "s1")
    finish(store, "p1")
    assert 0 < store.ttl("s1") <= 60 and 0 < store.client.ttl(store.keys.activities("s1")) <= 60
    assert 60 < store.ttl("p1") <= 3600  # the global retention stays the default
    # the run's keys outlive each of its instances: the longest retention wins
    assert 60 < store.client.ttl(store.keys.run_status(RUN, "succeeded")) <= 3600


def test_an_instance_of_another_definition_in_the_same_batch_keeps_its_own_retention(store: RedisStore) -> None:
    publish(store, "short", retention_days=60 / 86400)
    publish(store, "plain")
    store.create([new("s1", "short", Placement.end("a", InstanceStatus.SUCCEEDED)),
                  new("p1", "plain", Placement.end("a", InstanceStatus.SUCCEEDED))])
    assert 0 < store.ttl("s1") <= 60 and 60 < store.ttl("p1") <= 3600


def test_a_tiny_retention_leaves_no_instance_keys_behind(store: RedisStore) -> None:
    publish(store, "tiny", retention_days=1 / 86400)
    store.touch_run(RUN, {"workflow:tiny": 1})
    store.create([new(f"i{n}", "tiny", Placement.step("a", NOW + 60)) for n in range(5)])
    store.touch_run(RUN, {"total": 5})
    for n in range(5):
        finish(store, f"i{n}", InstanceStatus.FAILED if n == 0 else InstanceStatus.SUCCEEDED)
    assert wait_until(lambda: instance_keys(store) <= {store.keys.runs})
    assert store.runs() == [RUN]  # the index entry goes at the next housekeeping
    done = store.housekeep(every=0)
    assert done is not None and done.runs_dropped == 1
    assert instance_keys(store) == set() and store.runs() == []


def test_the_run_metadata_expires_only_once_its_last_instance_finished(store: RedisStore) -> None:
    publish(store, "plain")
    store.touch_run(RUN, {"total": 2})
    store.create([new("a1", "plain", Placement.step("a", NOW + 60)), new("a2", "plain", Placement.step("a", NOW))])
    finish(store, "a1")
    assert store.client.ttl(store.keys.run_meta(RUN)) == -1  # a2 still runs
    finish(store, "a2")
    assert 0 < store.client.ttl(store.keys.run_meta(RUN)) <= 3600
    store.touch_run(RUN, {"total": 1})  # the run is started again: its metadata stays until that one ends
    assert store.client.ttl(store.keys.run_meta(RUN)) == -1


def test_housekeeping_gives_a_run_without_instances_its_ttl_and_runs_at_most_once_per_period(
        store: RedisStore) -> None:
    store.touch_run("empty", {"total": 0})
    assert store.client.ttl(store.keys.run_meta("empty")) == -1
    first = store.housekeep(every=60)
    assert first is not None and first.runs_expiring == 1
    assert 0 < store.client.ttl(store.keys.run_meta("empty")) <= 3600
    assert store.housekeep(every=60) is None  # leased for a minute across the fleet


def test_housekeeping_leaves_live_runs_alone(store: RedisStore) -> None:
    publish(store, "plain")
    store.touch_run(RUN, {"total": 1})
    store.create([new("a1", "plain", Placement.wait("a", NOW))])
    done = store.housekeep(every=0)
    assert done is not None and done.total == 0
    assert store.client.ttl(store.keys.run_meta(RUN)) == -1 and store.runs() == [RUN]


def test_housekeeping_trims_the_batch_index_and_the_gathers_of_expired_batches(store: RedisStore) -> None:
    k = store.keys
    store.client.zadd(k.batches, {"gone#1": NOW, "kept#1": NOW + 1})
    store.client.hset(k.gathers, mapping={"gone": "gone#1", "kept": "kept#1"})
    store.client.hset(k.batch("kept#1"), mapping={"id": "kept#1", "status": "open"})
    done = store.housekeep(every=0)
    assert done is not None and (done.batches_dropped, done.names_dropped) == (1, 1)
    assert [b.decode() for b in store.client.zrange(k.batches, 0, -1)] == ["kept#1"]
    assert store.client.hgetall(k.gathers) == {b"kept": b"kept#1"}


def test_housekeeping_trims_the_audit_log_to_the_retention_while_nothing_is_appended(any_redis: redis.Redis,
                                                                                     key_prefix: str) -> None:
    # an append trims what is older than the retention; with no append, the sweeper's pass does
    store = RedisStore(any_redis, Keys(key_prefix), retention_seconds=1)
    for n in range(3):
        store.append_audit({"kind": "signal", "n": str(n)})
    time.sleep(1.2)  # older than the retention, on the server's clock
    kept = store.append_audit({"kind": "signal", "n": "new"})
    done = store.housekeep(every=0)
    assert done is not None and done.audit_dropped == 3
    assert [entry_id for entry_id, _ in store.audit_entries("+", "-", 10)] == [kept]
    time.sleep(1.2)
    done = store.housekeep(every=0)
    assert done is not None and done.audit_dropped == 1 and store.audit_entries("+", "-", 10) == []
