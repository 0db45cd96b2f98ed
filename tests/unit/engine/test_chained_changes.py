"""Changes of one instance collected together go to Redis as one ``chain`` call of ``lua/state.lua``.

A worker's held transitions (the steps before a reads-only one) are sent together; consecutive
ones of one instance are one script call instead of one each. Each must still land exactly as its
own call would: its compare-and-set, its record (or no-op record), its placement, its message;
the replies one per change, in order; riders after the last. Each test here applies the same
changes to two identical instances, one call each and together, and compares what Redis holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import fakeredis
import pytest
import redis

from engine.instance import Activity, InstanceStatus, Outcome
from engine.store.codec import Applied
from engine.store.instances import chained
from engine.store.keys import Keys
from engine.store.redis_store import Envelope, NewInstance, Placement, RedisStore
from engine.store.riders import Rider

NOW = 1_750_000_000.5
RUN = "r1"
RUNNING_ONLY = (InstanceStatus.RUNNING,)


@pytest.fixture
def store(any_redis: redis.Redis, key_prefix: str) -> Iterator[RedisStore]:
    """A store on its own key prefix."""
    yield RedisStore(any_redis, Keys(key_prefix), retention_seconds=3600)


def act(seq: int, node: str, outcome: Outcome = Outcome.APPLIED) -> Activity:
    """The record of step ``seq`` at ``node``."""
    return Activity(seq=seq, node=node, attempt=1, outcome=outcome, worker="test", started_at=NOW, ended_at=NOW)


def running(store: RedisStore, *ids: str) -> None:
    """Create ``ids``, each running node ``a`` at seq 1."""
    assert store.create([NewInstance(iid, "w", 1, RUN, {"k": 1}, NOW, act(0, "a", Outcome.STARTED),
                                     Placement.step("a", NOW + 60)) for iid in ids]) == [True] * len(ids)


def held(store: RedisStore, iid: str, seqs: tuple[int, int, int] = (1, 2, 3),
         riders: Sequence[Rider] = ()) -> list[Applied]:
    """The three transitions a worker holds for a chain a -> r1 -> r2 -> w (r1, r2 reads-only), as
    ``_advance`` makes them, each expecting its seq of ``seqs``: the first may apply to a paused
    instance, the others to a running one only; the last sends w's message and carries ``riders``."""
    queue = f"{store.keys.prefix}:queue"
    first, middle, last = seqs
    return [
        store.advance(iid, seq=first, activity=act(1, "a"), placement=Placement.step("r1", NOW + 60),
                      context=("a", {"n": 1}), noop=act(1, "a", Outcome.NOOP), carrier="c@h:1"),
        store.advance(iid, seq=middle, activity=act(2, "r1"), placement=Placement.step("r2", NOW + 70),
                      context=("r1", {"n": 2}), noop=act(2, "r1", Outcome.NOOP), carrier="c@h:1",
                      statuses=RUNNING_ONLY),
        store.advance(iid, seq=last, activity=act(3, "r2"), placement=Placement.queued_step("w", 30),
                      context=("r2", {"n": 3}), noop=act(3, "r2", Outcome.NOOP), carrier="",
                      statuses=RUNNING_ONLY, send=Envelope(queue, f"run w of {iid}"), riders=riders),
    ]


def together(store: RedisStore, iid: str, **kw: Any) -> list[Applied]:
    """:func:`held` collected and sent at once, as ``StepOutcomes.apply_changes`` sends them."""
    store.collect()
    held(store, iid, **kw)
    return store.send_collected()


def state(store: RedisStore, iid: str) -> dict[str, Any]:
    """All Redis holds of instance ``iid`` (its id and the moment of each write left out)."""
    k, client = store.keys, store.client
    fields = {f.decode(): v for f, v in client.hgetall(k.instance(iid)).items() if f not in (b"id", b"updated_at")}
    return {
        "hash": fields,
        "activities": store.activities(iid),
        "statuses": sorted(s.value for s in InstanceStatus
                           if client.sismember(k.run_status(RUN, s.value), iid)),
        "deadline": client.zscore(k.deadlines, iid), "timer": client.zscore(k.timers, iid),
        "queued": client.zscore(k.queued, iid) is not None,
        "messages": [m.decode().replace(iid, "<id>") for m in client.lrange(f"{k.prefix}:queue", 0, -1)
                     if iid.encode() in m],
    }


def test_held_transitions_sent_together_land_as_three_separate_calls_would(store: RedisStore) -> None:
    running(store, "apart", "together")
    apart = held(store, "apart")
    assert together(store, "together") == apart
    assert [(a.applied, a.status, a.seq) for a in apart] == [
        (True, InstanceStatus.RUNNING, 2), (True, InstanceStatus.RUNNING, 3), (True, InstanceStatus.RUNNING, 4)]
    assert state(store, "together") == state(store, "apart")
    assert state(store, "together")["messages"] == ["run w of <id>"]


def test_a_refused_middle_change_refuses_the_ones_after_it_as_separate_calls_do(store: RedisStore) -> None:
    running(store, "apart", "together")
    apart = held(store, "apart", seqs=(1, 7, 3))  # the middle one expects a seq the instance never had
    assert together(store, "together", seqs=(1, 7, 3)) == apart
    assert [(a.applied, a.seq) for a in apart] == [(True, 2), (False, 2), (False, 2)]
    after = state(store, "together")
    assert after == state(store, "apart")
    assert [a["outcome"] for a in after["activities"]] == ["started", "applied", "noop", "noop"]
    assert after["hash"]["noops"] == b"2" and after["messages"] == [] and after["hash"]["node"] == b"r1"


def test_a_paused_instance_takes_the_first_change_and_refuses_the_speculative_ones(store: RedisStore) -> None:
    running(store, "apart", "together")
    for iid in ("apart", "together"):
        assert store.control(iid, seq=1, statuses=RUNNING_ONLY, activity=act(1, "a", Outcome.CONTROL),
                             placement=Placement(InstanceStatus.PAUSED)).applied
    apart = held(store, "apart")
    assert together(store, "together") == apart
    assert [(a.applied, a.status, a.seq) for a in apart] == [
        (True, InstanceStatus.PAUSED, 2), (False, InstanceStatus.PAUSED, 2), (False, InstanceStatus.PAUSED, 2)]
    after = state(store, "together")
    assert after == state(store, "apart")
    assert [a["outcome"] for a in after["activities"]][-3:] == ["applied", "noop", "noop"]
    assert after["messages"] == [] and after["hash"]["noops"] == b"2"


def test_riders_go_after_the_last_change_in_the_same_round_trip(store: RedisStore) -> None:
    running(store, "i1")
    seen: list[Any] = []
    rider = Rider(lambda: ("HGET", store.keys.instance("i1"), "seq"), seen.append)
    assert [a.seq for a in together(store, "i1", riders=[rider])] == [2, 3, 4]
    assert seen == [b"4"]  # it ran after all three


def test_changes_sent_together_after_the_server_forgot_its_scripts_are_each_applied(key_prefix: str) -> None:
    store = RedisStore(fakeredis.FakeRedis(), Keys(key_prefix), retention_seconds=3600)
    running(store, "i1")
    store.client.script_flush()  # a restart or a failover: the chain's call answers NOSCRIPT first
    assert [(a.applied, a.seq) for a in together(store, "i1")] == [(True, 2), (True, 3), (True, 4)]
    assert [a["node"] for a in store.activities("i1")] == ["a", "a", "r1", "r2"]


class Counting(redis.Redis):
    """A client that keeps the operation of every call of ``lua/state.lua`` it sends (EVALSHA)."""

    calls: list[str]

    def _seen(self, args: Sequence[Any]) -> None:
        doc = args[3 + int(args[2])] if args[0] == "EVALSHA" and len(args) > 3 + int(args[2]) else ""
        if isinstance(doc, str) and doc.startswith("{") and '"op":' in doc:  # (other scripts' arguments are not)
            self.calls.append(json.loads(doc)["op"])

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self._seen(args)
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute_command = pipe.execute_command

        def counted(*args: Any, **options: Any) -> Any:
            self._seen(args)
            return execute_command(*args, **options)

        pipe.execute_command = counted  # type: ignore[method-assign]
        return pipe


def test_three_held_changes_are_one_script_call(redis_url: str, real_redis: redis.Redis, key_prefix: str) -> None:
    client = Counting.from_url(redis_url)
    client.calls = []
    store = RedisStore(client, Keys(key_prefix), retention_seconds=3600)
    running(store, "i1", "i2")
    client.calls.clear()
    assert [a.seq for a in together(store, "i1")] == [2, 3, 4]
    assert client.calls == ["chain"]
    client.calls.clear()
    assert [a.seq for a in held(store, "i2")] == [2, 3, 4]  # not collected: one call each
    assert client.calls == ["advance"] * 3


def _call(instance: str, queue: str | None = None) -> tuple[list[str], list[Any]]:
    """The keys and arguments of a call on ``instance`` (sending a message to ``queue``)."""
    return [instance, f"{instance}:acts", "timers", "deadlines", queue or instance, "queued"], [instance]


def test_only_consecutive_changes_of_one_instance_with_at_most_one_queue_are_chained() -> None:
    calls = [_call("a"), _call("a", "q1"), _call("b"), _call("a"), _call("a", "q1"), _call("a", "q2"),
             _call("a"), _call("a", "q2")]
    assert [[args[0] for _, args in group] for group in chained(calls)] == [
        ["a", "a"], ["b"], ["a", "a"], ["a", "a", "a"]]
    assert [[keys[4] for keys, _ in group] for group in chained(calls)][3] == ["q2", "a", "q2"]
