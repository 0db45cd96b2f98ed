"""The store's state-change operations (``lua/state.lua``), each on fakeredis and on a real Redis.

Every test reads the instance hash, its activity list, the timer and deadline indexes and the
run's status sets back from Redis: the operation must keep all of them in step, atomically.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from engine.instance import Activity, InstanceStatus, Outcome
from engine.store.keys import Keys
from engine.store.redis_store import Envelope, NewInstance, Placement, RedisStore

NOW = 1_750_000_000.123456
RUN = "r1"


@pytest.fixture
def store(any_redis: redis.Redis, key_prefix: str) -> Iterator[RedisStore]:
    """A store on its own key prefix, with a one-hour retention."""
    yield RedisStore(any_redis, Keys(key_prefix), retention_seconds=3600)


def act(outcome: Outcome = Outcome.APPLIED, seq: int = 1, **fields: object) -> Activity:
    """An activity record of step ``seq`` of node ``a``."""
    return Activity(seq=seq, node="a", attempt=1, outcome=outcome, worker="test", started_at=NOW, ended_at=NOW,
                    **fields)  # type: ignore[arg-type]


def new(store: RedisStore, iid: str, placement: Placement, send: Envelope | None = None, **kw: object) -> NewInstance:
    """An instance ``iid`` of workflow ``w`` version 1 in run ``r1``."""
    return NewInstance(iid, "w", 1, RUN, {"k": 1}, NOW, act(Outcome.STARTED, seq=0), placement, send=send,
                       **kw)  # type: ignore[arg-type]


def members(store: RedisStore, status: InstanceStatus) -> set[str]:
    """Ids in ``status`` of the run, read from its status set."""
    return {m.decode() for m in store.client.smembers(store.keys.run_status(RUN, status.value))}


def score(store: RedisStore, index: str, iid: str) -> float | None:
    """``iid``'s score in the timers or deadlines index."""
    return store.client.zscore(getattr(store.keys, index), iid)


def kept_deadline(at: float) -> int:
    """A deadline as the ``deadlines`` index keeps it: rounded up to the whole second (state.lua)."""
    return math.ceil(at)


def running(store: RedisStore, iid: str = "i1", deadline: float = NOW + 60) -> None:
    """Create ``iid`` running node ``a`` with ``deadline``."""
    assert store.create([new(store, iid, Placement.step("a", deadline))]) == [True]


def test_create_writes_the_instance_its_record_its_indexes_and_its_first_message(store: RedisStore) -> None:
    queue = f"{store.keys.prefix}:queue"
    created = store.create([new(store, "i1", Placement.step("a", NOW + 60), send=Envelope(queue, "msg-1")),
                            new(store, "i2", Placement.wait("w", NOW + 600)),
                            new(store, "i3", Placement.end("a", InstanceStatus.FAILED),
                                error={"reason": "invalid input"})])
    assert created == [True, True, True]
    one, two, three = (store.load(i) for i in ("i1", "i2", "i3"))
    assert one and one.status is InstanceStatus.RUNNING and one.node == "a" and one.seq == 1 and one.inflight
    assert one.data == {"k": 1} and one.created_at == NOW
    assert two and two.status is InstanceStatus.WAITING and two.wake_at == NOW + 600 and two.timer == "wake"
    assert three and three.status is InstanceStatus.FAILED and three.error == {"reason": "invalid input"}
    assert three.finished_at == NOW and 0 < store.ttl("i3") <= 3600 and store.ttl("i1") == -1
    assert score(store, "deadlines", "i1") == kept_deadline(NOW + 60) and score(store, "timers", "i2") == NOW + 600
    assert members(store, InstanceStatus.RUNNING) == {"i1"} and members(store, InstanceStatus.FAILED) == {"i3"}
    assert store.client.lrange(queue, 0, -1) == [b"msg-1"]
    assert [a["outcome"] for a in store.activities("i1")] == ["started"]


def test_the_deadlines_and_queued_indexes_keep_whole_seconds_and_the_timers_every_digit(store: RedisStore) -> None:
    # A deadline is rounded up (never earlier than due), a sending time down (never younger than it
    # is); a wake time keeps its fraction (a sub-second backoff stays sub-second).
    queue = f"{store.keys.prefix}:queue"
    before = time.time()
    assert store.create([new(store, "q", Placement.queued_step("a", 30.25), send=Envelope(queue, "m")),
                         new(store, "d", Placement.step("a", NOW + 60)),
                         new(store, "w", Placement.wait("w", NOW + 0.5))]) == [True, True, True]
    sent = score(store, "queued", "q")
    assert sent is not None and sent == int(sent) and math.floor(before) <= sent <= time.time()
    assert score(store, "deadlines", "d") == math.ceil(NOW + 60) > NOW + 60
    assert score(store, "timers", "w") == pytest.approx(NOW + 0.5, abs=1e-6)
    store.start("q", "a", 1, 1, NOW)
    assert score(store, "queued", "q") is None and score(store, "deadlines", "q") == math.ceil(NOW + 30.25)


def test_create_leaves_an_existing_instance_alone(store: RedisStore) -> None:
    running(store)
    queue = f"{store.keys.prefix}:queue"
    again = new(store, "i1", Placement.wait("w", NOW), send=Envelope(queue, "dup"))
    assert store.create([again, new(store, "i2", Placement.step("a", NOW))]) == [False, True]
    instance = store.load("i1")
    assert instance and instance.status is InstanceStatus.RUNNING and len(store.activities("i1")) == 1
    assert not store.client.exists(queue)


def test_advance_records_the_context_moves_on_and_keeps_indexes_in_step(store: RedisStore) -> None:
    running(store)
    queue = f"{store.keys.prefix}:queue"
    applied = store.advance("i1", seq=1, activity=act(), placement=Placement.step("b", NOW + 90),
                            context=("a", {"x": [1, 2]}), carrier="", send=Envelope(queue, "msg-2"))
    assert applied.applied and applied.status is InstanceStatus.RUNNING and applied.seq == 2
    instance = store.load("i1")
    assert instance and instance.node == "b" and instance.seq == 2 and instance.context == {"a": {"x": [1, 2]}}
    assert score(store, "deadlines", "i1") == kept_deadline(NOW + 90)
    assert store.client.lrange(queue, 0, -1) == [b"msg-2"]
    finished = store.advance("i1", seq=2, activity=act(seq=2), context=("b", {}),
                             placement=Placement.end("done", InstanceStatus.SUCCEEDED, {"r": 1}, ["a"]))
    assert finished.applied and finished.status is InstanceStatus.SUCCEEDED
    instance = store.load("i1")
    assert instance and instance.result == {"r": 1} and instance.context == {"b": {}}  # "a" dropped on success
    assert score(store, "deadlines", "i1") is None and members(store, InstanceStatus.SUCCEEDED) == {"i1"}
    assert members(store, InstanceStatus.RUNNING) == set() and 0 < store.ttl("i1") <= 3600


def test_a_stale_advance_changes_nothing_and_records_its_noop(store: RedisStore) -> None:
    running(store)
    stale = store.advance("i1", seq=7, activity=act(), placement=Placement.step("b", NOW),
                          noop=act(Outcome.NOOP, reason="another delivery applied first"))
    assert not stale.applied and stale.status is InstanceStatus.RUNNING and stale.seq == 1
    instance = store.load("i1")
    assert instance and instance.node == "a" and instance.seq == 1 and instance.noops == 1
    assert [a["outcome"] for a in store.activities("i1")] == ["started", "noop"]
    assert store.advance("nobody", seq=1, activity=act(), placement=Placement.step("b", NOW)).missing


def test_a_late_noop_is_built_and_recorded_only_when_its_change_comes_back_stale(store: RedisStore) -> None:
    built: list[str] = []

    def late(reason: str) -> Callable[[], Activity]:
        def build() -> Activity:
            built.append(reason)
            return act(Outcome.NOOP, reason=reason)
        return build

    running(store, "i1")
    running(store, "i2")
    assert store.advance("i1", seq=1, activity=act(), placement=Placement.step("b", NOW), noop=late("unused")).applied
    stale = store.advance("i1", seq=1, activity=act(), placement=Placement.step("b", NOW), noop=late("alone"))
    assert not stale.applied and stale.status is InstanceStatus.RUNNING and built == ["alone"]
    # collected (one round trip): only the stale change's record is built, written after the replies
    store.collect()
    store.advance("i2", seq=1, activity=act(), placement=Placement.step("b", NOW), noop=late("applies"))
    store.advance("i1", seq=1, activity=act(), placement=Placement.step("b", NOW), noop=late("collected"))
    assert [a.applied for a in store.send_collected()] == [True, False] and built == ["alone", "collected"]
    assert store.advance("nobody", seq=1, activity=act(), placement=Placement.step("b", NOW),
                         noop=late("missing")).missing and built == ["alone", "collected"]
    one, two = store.load("i1"), store.load("i2")
    assert one and one.noops == 2 and two and two.noops == 0
    assert [(a["outcome"], a.get("reason")) for a in store.activities("i1")] == [
        ("started", None), ("applied", None), ("noop", "alone"), ("noop", "collected")]


def test_a_late_noop_that_redis_refuses_is_logged_and_the_changes_keep_their_outcomes(
        store: RedisStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    running(store, "i1")
    running(store, "i2")
    assert store.advance("i1", seq=1, activity=act(), placement=Placement.step("b", NOW)).applied

    real = store.client.pipeline

    def refusing_noops(**kwargs: Any) -> Any:  # a pipeline that fails when it carries a no-op record
        pipe = real(**kwargs)
        execute = pipe.execute

        def refused(*args: Any, **kw: Any) -> Any:
            if '"op":"noop"' in str(pipe.command_stack):
                raise redis.ConnectionError("Redis went away")
            return execute(*args, **kw)
        pipe.execute = refused
        return pipe

    monkeypatch.setattr(store.client, "pipeline", refusing_noops)
    store.collect()
    store.advance("i2", seq=1, activity=act(), placement=Placement.step("b", NOW),
                  noop=lambda: act(Outcome.NOOP, reason="x"))
    store.advance("i1", seq=1, activity=act(), placement=Placement.step("b", NOW),
                  noop=lambda: act(Outcome.NOOP, reason="x"))
    with caplog.at_level("WARNING", logger="engine.store.instances"):
        assert [a.applied for a in store.send_collected()] == [True, False]
    assert "no-op records of 1 stale changes were not written (i1)" in caplog.text
    two = store.load("i2")
    assert two and two.node == "b" and two.seq == 2


def test_a_paused_instance_records_the_step_that_came_back_and_stays_paused(store: RedisStore) -> None:
    running(store)
    assert store.control("i1", seq=1, statuses=[InstanceStatus.RUNNING], activity=act(Outcome.CONTROL),
                         placement=Placement(InstanceStatus.PAUSED)).applied
    applied = store.advance("i1", seq=1, activity=act(), placement=Placement.step("b", NOW), context=("a", 1))
    instance = store.load("i1")
    assert applied.status is InstanceStatus.PAUSED and instance and instance.node == "b" and not instance.inflight
    assert score(store, "deadlines", "i1") is None and members(store, InstanceStatus.PAUSED) == {"i1"}


def test_retry_after_a_backoff_parks_a_timer_and_an_immediate_one_a_deadline(store: RedisStore) -> None:
    running(store)
    later = store.retry("i1", seq=1, attempt=1, next_attempt=2, activity=act(Outcome.RETRY),
                        placement=Placement(inflight=False, timer=NOW + 5, timer_kind="retry"))
    instance = store.load("i1")
    assert later.applied and instance and instance.attempt == 2 and instance.timer == "retry"
    assert score(store, "timers", "i1") == NOW + 5 and score(store, "deadlines", "i1") is None
    assert not store.retry("i1", seq=1, attempt=1, next_attempt=2,
                           placement=Placement(inflight=True, deadline=NOW)).applied  # attempt moved on
    now = store.retry("i1", seq=1, attempt=2, next_attempt=3, statuses=[InstanceStatus.RUNNING],
                      placement=Placement(inflight=True, deadline=NOW + 30))
    instance = store.load("i1")
    assert now.applied and instance and instance.attempt == 3 and instance.timer is None and instance.inflight
    assert score(store, "timers", "i1") is None and score(store, "deadlines", "i1") == kept_deadline(NOW + 30)
    assert [a["outcome"] for a in store.activities("i1")] == ["started", "retry"]  # a resend may record nothing


def test_fail_records_the_error_ends_the_instance_and_expires_it(store: RedisStore) -> None:
    running(store)
    failed = store.fail("i1", seq=1, attempt=1, activity=act(Outcome.FAILED, error="boom"),
                        error={"reason": "boom"})
    instance = store.load("i1")
    assert failed.applied and instance and instance.status is InstanceStatus.FAILED
    assert instance.error == {"reason": "boom"} and not instance.inflight and instance.finished_at
    assert members(store, InstanceStatus.FAILED) == {"i1"} and score(store, "deadlines", "i1") is None
    assert 0 < store.ttl("i1") <= 3600


def test_park_sets_aside_a_step_of_a_paused_instance(store: RedisStore) -> None:
    running(store)
    assert not store.park("i1", seq=1, activity=act(Outcome.SKIPPED)).applied  # not paused
    store.control("i1", seq=1, statuses=[InstanceStatus.RUNNING], activity=act(Outcome.CONTROL),
                  placement=Placement(InstanceStatus.PAUSED))
    assert store.load("i1").inflight  # type: ignore[union-attr]  # pause lets the step in flight finish
    assert store.park("i1", seq=1, activity=act(Outcome.SKIPPED)).applied
    instance = store.load("i1")
    assert instance and instance.status is InstanceStatus.PAUSED and not instance.inflight


def test_control_pause_keeps_the_wake_time_and_retry_replaces_context_entries(store: RedisStore) -> None:
    store.create([new(store, "i1", Placement.wait("w", NOW + 600))])
    store.control("i1", seq=1, statuses=[InstanceStatus.WAITING], activity=act(Outcome.CONTROL),
                  placement=Placement(InstanceStatus.PAUSED))
    instance = store.load("i1")
    assert instance and instance.status is InstanceStatus.PAUSED and instance.wake_at == NOW + 600
    assert score(store, "timers", "i1") is None
    store.control("i1", seq=1, statuses=[InstanceStatus.PAUSED], activity=act(Outcome.CONTROL),
                  placement=Placement(InstanceStatus.CANCELLED, inflight=False))
    assert members(store, InstanceStatus.CANCELLED) == {"i1"}

    running(store, "i2")
    store.fail("i2", seq=1, attempt=1, activity=act(Outcome.FAILED), error={"reason": "x"})
    assert not store.control("i2", seq=1, statuses=[InstanceStatus.PAUSED], activity=act(Outcome.CONTROL),
                             placement=Placement.step("a", NOW), context={"a": {"fixed": True}}).applied
    assert store.load("i2").context == {}  # type: ignore[union-attr]  # edits land only with the change
    retried = store.control("i2", seq=1, statuses=[InstanceStatus.FAILED], activity=act(Outcome.CONTROL),
                            placement=Placement.step("a", NOW + 30), attempt=1, context={"a": {"fixed": True}})
    instance = store.load("i2")
    assert retried.applied and instance and instance.status is InstanceStatus.RUNNING and instance.error is None
    assert instance.context == {"a": {"fixed": True}} and store.ttl("i2") == -1
    assert members(store, InstanceStatus.FAILED) == set() and score(store, "deadlines", "i2") == kept_deadline(NOW + 30)


def test_noop_and_release(store: RedisStore) -> None:
    running(store)
    store.noop("i1", act(Outcome.NOOP, reason="stale"))
    store.noop("nobody", act(Outcome.NOOP))
    assert store.load("i1").noops == 1 and not store.client.exists(store.keys.instance("nobody"))  # type: ignore[union-attr]
    store.release("i1", "deadlines")
    assert score(store, "deadlines", "i1") is None
    store.client.zadd(store.keys.timers, {"gone": 1.0})
    store.release("gone", "timers")
    assert score(store, "timers", "gone") is None


def test_an_unknown_operation_is_refused_before_anything_changes(store: RedisStore) -> None:
    running(store)
    with pytest.raises(redis.ResponseError, match="unknown operation"):
        store._change("teleport", "i1", {"expect": {"statuses": ["running"], "seq": 1}}, {})
    assert len(store.activities("i1")) == 1


def test_signal_applies_at_the_awaited_seq_keeps_its_marker_and_records_a_late_one_as_noop(
        store: RedisStore) -> None:
    assert store.create([new(store, "i1", Placement.awaiting("gate", NOW + 900))]) == [True]
    assert members(store, InstanceStatus.AWAITING) == {"i1"} and score(store, "timers", "i1") == NOW + 900
    assert store.load("i1").timer == "timeout"  # type: ignore[union-attr]
    applied = store.signal("i1", seq=1, activity=act(Outcome.SIGNALLED, signal="go", by="ann", key="k1"),
                           placement=Placement.step("b", NOW + 60), context=("gate", {"x": 1}),
                           noop=act(Outcome.NOOP, reason="late"), marker="signal:k1")
    assert (applied.applied, applied.status, applied.seq) == (True, InstanceStatus.RUNNING, 2)
    instance = store.load("i1")
    assert instance is not None and instance.context["gate"] == {"x": 1} and instance.node == "b"
    assert store.marker("i1", "signal:k1") == "2" and score(store, "timers", "i1") is None
    assert score(store, "deadlines", "i1") == kept_deadline(NOW + 60)
    assert members(store, InstanceStatus.AWAITING) == set()
    late = store.signal("i1", seq=1, activity=act(Outcome.SIGNALLED, signal="go"), placement=Placement.step("b", 0),
                        context=("gate", {"x": 2}), noop=act(Outcome.NOOP, reason="late"), marker="signal:k2")
    assert not late.applied and late.seq == 2 and store.marker("i1", "signal:k2") is None
    assert [a["outcome"] for a in store.activities("i1")] == ["started", "signalled", "noop"]
    assert store.load("i1").noops == 1 and store.load("i1").context["gate"] == {"x": 1}  # type: ignore[union-attr]


def test_a_counted_signal_keeps_the_quorum_until_reached_or_the_node_is_left(store: RedisStore) -> None:
    store.create([new(store, "i1", Placement.awaiting("gate", NOW + 900))])
    quorum = {"node": "gate", "signal": "go", "count": 2, "principals": [{"name": "ann", "roles": ["pm"], "at": NOW}]}
    counted = store.signal("i1", seq=1, activity=act(Outcome.COUNTED, signal="go", by="ann", quorum="1 of 2"),
                           placement=Placement.awaiting("gate", NOW + 900), context=("gate", {"by": "ann"}),
                           quorum=quorum)
    assert (counted.applied, counted.status, counted.seq) == (True, InstanceStatus.AWAITING, 2)
    instance = store.load("i1")
    assert instance is not None and instance.quorum == quorum and instance.node == "gate"
    assert score(store, "timers", "i1") == NOW + 900  # still awaiting its timeout
    stale = store.signal("i1", seq=1, activity=act(Outcome.COUNTED, signal="go", by="bob"),
                         placement=Placement.awaiting("gate", NOW + 900), context=("gate", {"by": "bob"}),
                         quorum={**quorum, "principals": []})
    assert not stale.applied and store.load("i1").quorum == quorum  # type: ignore[union-attr]
    assert [a["outcome"] for a in store.activities("i1")] == ["started", "counted"]  # no noop given, none kept
    store.signal("i1", seq=2, activity=act(Outcome.SIGNALLED, signal="note"),
                 placement=Placement.awaiting("gate", None), context=("gate", {"by": "ops"}))
    assert store.load("i1").quorum == quorum  # type: ignore[union-attr]  # another signal back to the node
    store.signal("i1", seq=3, activity=act(Outcome.SIGNALLED, signal="go"), placement=Placement.step("b", NOW + 60),
                 context=("gate", {"by": "bob"}), quorum_reached=True)
    assert store.load("i1").quorum is None  # type: ignore[union-attr]
    store.create([new(store, "i2", Placement.awaiting("gate", NOW + 900))])
    store.signal("i2", seq=1, activity=act(Outcome.COUNTED, signal="go"), placement=Placement.awaiting("gate", None),
                 context=("gate", {}), quorum=quorum)
    store.control("i2", seq=2, statuses=[InstanceStatus.AWAITING], activity=act(Outcome.CONTROL, control="cancel"),
                  placement=Placement.end("ended", InstanceStatus.CANCELLED))
    assert store.load("i2").quorum is None  # type: ignore[union-attr]  # leaving the node ends its quorum


def test_a_refused_signal_is_recorded_and_changes_nothing_else(store: RedisStore) -> None:
    store.create([new(store, "i1", Placement.awaiting("gate", NOW + 900))])
    before = store.load("i1")
    store.refuse("i1", act(Outcome.REFUSED, signal="go", by="ops", roles=["operator"], reason="needs the role pm"))
    after = store.load("i1")
    assert after is not None and before is not None
    assert (after.seq, after.status, after.node, after.noops, after.updated_at) == (
        before.seq, before.status, before.node, before.noops, before.updated_at)
    assert store.activities("i1")[-1]["outcome"] == "refused" and store.activities("i1")[-1]["roles"] == ["operator"]
    store.refuse("nobody", act(Outcome.REFUSED, signal="go"))  # no instance: nothing written
    assert store.load("nobody") is None and store.activities("nobody") == []


def test_the_audit_stream_is_trimmed_to_the_retention(store: RedisStore) -> None:
    for i in range(300):  # a year ago and more: far past the one-hour retention
        store.client.xadd(store.keys.audit, {"kind": "login", "by": "ann"}, id=f"1000-{i + 1}")
    store.append_audit({"kind": "pause", "by": "ops"})
    left = [fields["kind"] for _id, fields in store.audit_entries("+", "-", 1000)]
    assert left[0] == "pause"
    assert left.count("login") <= 100  # trimmed by whole stream nodes (approximate MINID): bounded


def test_start_reads_the_instance_as_load_does(store: RedisStore) -> None:
    running(store)
    data = {"lots": [{"symbol": f"S{i}", "note": "é" * i} for i in range(40)]}  # stored compressed
    store.advance("i1", seq=1, activity=act(), placement=Placement.step("b", NOW + 60), context=("a", data),
                  carrier="")
    store.client.hset(store.keys.instance("i1"), "marker", "")  # an empty value too
    started = store.start("i1", "b", 2, 1, NOW + 1)
    assert started == store.load("i1") and started is not None
    assert started.context == {"a": data} and started.node == "b" and started.seq == 2
    assert started.extra == {} and store.start("nobody", "a", 1, 1, NOW) is None


def test_start_reads_a_hash_of_thousands_of_fields_and_a_value_over_64_kib(store: RedisStore) -> None:
    """The lengths in a start's reply when there are more of them than the script packs in one call
    (5,000 fields: packed one by one), and one over 16 bits: every field still read back right."""
    running(store)
    markers = {f"sig:{i}": str(i) for i in range(5000)}
    store.client.hset(store.keys.instance("i1"), mapping={**markers, "c:big": '"' + "y" * 70_000 + '"'})  # JSON text
    started = store.start("i1", "a", 1, 1, NOW + 1)
    assert started is not None and started == store.load("i1")
    assert started.context == {"big": "y" * 70_000} and started.node == "a" and started.seq == 1


def test_split_hash_gives_the_fields_as_hgetall_does() -> None:
    from engine.store.codec import split_hash

    fields = [b"id", b"i1", b"c:a", b"x\x9c\x00,\xff", b"empty", b"", b"n\xc3\xa9", b"1,2"]
    sizes = struct.pack(f"<{len(fields)}I", *map(len, fields))
    assert split_hash(sizes, b"".join(fields)) == dict(zip(fields[0::2], fields[1::2], strict=True))


def test_a_split_hash_decodes_as_its_hgetall_would() -> None:
    from engine.store.codec import decode_instance_hash, decode_split_hash, pack, split_hash

    big = pack({"lots": [{"symbol": f"S{i}", "note": "é"} for i in range(40)]})
    assert isinstance(big, bytes)
    fields = [b"id", b"i1", b"c:a", big, b"c:b", b'{"n":1}', b"data", b"{}", b"empty", b"", b"n\xc3\xa9",
              b"1,2", b"seq", b"7"]
    sizes = struct.pack(f"<{len(fields)}I", *map(len, fields))
    decoded = decode_split_hash(sizes, b"".join(fields))
    assert decoded == decode_instance_hash(split_hash(sizes, b"".join(fields)))
    assert list(decoded) == ["id", "c:a", "c:b", "data", "empty", "né", "seq"] and decoded["né"] == "1,2"
    with pytest.raises(ValueError):  # a length without its pair
        decode_split_hash(sizes + struct.pack("<I", 3), b"".join(fields) + b"abc")
    with pytest.raises(ValueError):  # a truncated length
        decode_split_hash(sizes + b"\x03", b"".join(fields))


def test_an_operation_loads_its_script_when_the_server_lost_it(key_prefix: str) -> None:
    import fakeredis

    store = RedisStore(fakeredis.FakeRedis(), Keys(key_prefix), retention_seconds=3600)
    running(store)
    store.client.script_flush()  # a restarted or failed-over server knows no script
    applied = store.advance("i1", seq=1, activity=act(), placement=Placement.step("b", NOW + 60))
    assert applied.applied and applied.seq == 2
    assert store.start("i1", "b", 2, 1, NOW) is not None


def test_only_a_finished_instance_loses_its_ttl_when_it_runs_again_and_a_new_one_keeps_no_leftover_ttl(
        store: RedisStore) -> None:
    running(store)
    store.fail("i1", seq=1, attempt=1, activity=act(Outcome.FAILED), error={"reason": "x"})
    assert store.ttl("i1") > 0 and store.client.ttl(store.keys.activities("i1")) > 0
    assert store.control("i1", seq=1, statuses=[InstanceStatus.FAILED], activity=act(Outcome.CONTROL),
                         placement=Placement.step("a", NOW + 30), attempt=1).applied
    assert store.ttl("i1") == -1 and store.client.ttl(store.keys.activities("i1")) == -1  # both kept again
    # an activity list left by an expired instance of the same id does not take its TTL to the new one
    store.client.rpush(store.keys.activities("i2"), "old")
    store.client.expire(store.keys.activities("i2"), 600)
    running(store, "i2")
    assert store.client.ttl(store.keys.activities("i2")) == -1


def test_fields_written_and_deleted_by_one_change_end_as_if_sent_in_turn(store: RedisStore) -> None:
    # a signal counts its quorum (written) and leaves the node (deleted) in the same change: no quorum left
    store.create([new(store, "i1", Placement.awaiting("review", None))])
    applied = store.signal("i1", seq=1, activity=act(Outcome.APPLIED), placement=Placement.step("b", NOW + 30),
                           context=("review", {"ok": True}), quorum={"count": 1}, marker="m1")
    assert applied.applied
    fields = {k.decode(): v for k, v in store.client.hgetall(store.keys.instance("i1")).items()}
    assert "quorum" not in fields and fields["node"] == b"b" and fields["m1"] == b"2" and fields["seq"] == b"2"
    assert fields["status"] == b"running" and fields["inflight"] == b"1"


def test_a_queued_step_placement_is_built_once_and_its_document_is_a_fresh_dict_each_time() -> None:
    first = Placement.queued_step("calc", 300.0)
    assert first is Placement.queued_step("calc", 300.0)
    assert first == Placement(InstanceStatus.RUNNING, "calc", inflight=True, queued=300.0)
    assert Placement.queued_step("calc", 60.0).queued == 60.0 and Placement.queued_step("x", 300.0).node == "x"
    doc = first.document()
    assert doc == {"status": "running", "node": "calc", "inflight": True, "queued": "300.0"}
    doc["node"] = "changed"
    assert first.document()["node"] == "calc" and first.document() is not first.document()
    assert Placement.end("e", InstanceStatus.SUCCEEDED, drop_on_success=["a"]).document() == {
        "status": "succeeded", "node": "e", "inflight": False, "drop": ["a"]}


def test_an_activity_record_lists_its_present_fields_in_their_order() -> None:
    record = Activity(seq=3, node="n", attempt=1, outcome=Outcome.APPLIED, worker="w", started_at=1.0,
                      ended_at=2.0, transition="ok", received={"a": None}, next="m", error=None)
    assert list(record.to_dict().items()) == [
        ("seq", 3), ("node", "n"), ("attempt", 1), ("outcome", "applied"), ("worker", "w"), ("started_at", 1.0),
        ("ended_at", 2.0), ("transition", "ok"), ("received", {"a": None}), ("next", "m")]
