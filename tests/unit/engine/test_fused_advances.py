"""Advances applied at once land exactly as one call each, in turn, would leave the instance.

``lua/state.lua`` applies an ``advance``, and a chain of them (a worker's held transitions), in
one pass: every item's compare-and-set checked first against what the items before it leave,
then one command per key and kind of write. A document marked ``sequential`` takes the plain
path instead, each item through its own compare-and-set and placement: the reference. Each test
here makes the same changes on two instances, one through each path, and compares everything
Redis holds of them, their replies and their run's sets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import fakeredis
import pytest
import redis

from engine.instance import Activity, InstanceStatus, Outcome
from engine.store.codec import Applied
from engine.store.keys import Keys
from engine.store.redis_store import Envelope, NewInstance, Placement, RedisStore

NOW = 1_750_000_000.5
RUN = "r1"
RUNNING_ONLY = (InstanceStatus.RUNNING,)


_MARKED = ('{"op":"chain"', '{"op":"create_many"')


def _marked(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` of a command, a state.lua advance, chain or create_many marked ``sequential``."""
    if args and args[0] == "EVALSHA" and len(args) > 3 + int(args[2]):
        at = 3 + int(args[2])
        doc = args[at]
        if isinstance(doc, str) and ('"op":"advance"' in doc or doc.startswith(_MARKED)):
            return (*args[:at], '{"sequential":true,' + doc[1:], *args[at + 1:])
    return args


class _Marking:
    """A client whose state.lua advances and chains take the sequential path."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        return super().execute_command(*_marked(args), **options)  # type: ignore[misc]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[misc]
        execute_command = pipe.execute_command
        pipe.execute_command = lambda *args, **options: execute_command(*_marked(args), **options)
        return pipe


class SequentialRedis(_Marking, redis.Redis):
    """A real Redis client taking the sequential path."""


class SequentialFake(_Marking, fakeredis.FakeRedis):
    """A fakeredis client taking the sequential path."""


@pytest.fixture(params=["fakeredis", "redis"])
def stores(request: pytest.FixtureRequest, key_prefix: str) -> Iterator[tuple[RedisStore, RedisStore]]:
    """(fused, sequential): two stores on one server and key prefix, each path through its own client."""
    if request.param == "fakeredis":
        server = fakeredis.FakeServer()
        fused_client: redis.Redis = fakeredis.FakeRedis(server=server)
        plain_client: redis.Redis = SequentialFake(server=server)
    else:
        request.getfixturevalue("real_redis")  # (deletes the prefix's keys afterwards)
        url = request.getfixturevalue("redis_url")
        fused_client, plain_client = redis.Redis.from_url(url), SequentialRedis.from_url(url)
    keys = Keys(key_prefix)
    yield RedisStore(fused_client, keys, retention_seconds=3600), RedisStore(plain_client, keys, retention_seconds=3600)
    fused_client.close()
    plain_client.close()


def act(seq: int, node: str, outcome: Outcome = Outcome.APPLIED) -> Activity:
    """The record of step ``seq`` at ``node``."""
    return Activity(seq=seq, node=node, attempt=1, outcome=outcome, worker="test", started_at=NOW, ended_at=NOW)


def create(store: RedisStore, iid: str) -> None:
    """``iid`` running node ``a`` at seq 1."""
    assert store.create([NewInstance(iid, "w", 1, RUN, {"k": 1}, NOW, act(0, "a", Outcome.STARTED),
                                     Placement.step("a", NOW + 60))]) == [True]


def held(store: RedisStore, iid: str, last: Placement, *, seqs: Sequence[int] = (1, 2, 3),
         send: bool = False, forget: Sequence[str] = ()) -> list[Applied]:
    """A worker's chain a -> r1 -> r2 -> ``last`` (r1, r2 reads-only), collected and sent together."""
    queue = f"{store.keys.prefix}:queue"
    store.collect()
    store.advance(iid, seq=seqs[0], activity=act(1, "a"), placement=Placement.step("r1", NOW + 60),
                  context=("a", {"n": 1}), noop=act(1, "a", Outcome.NOOP), carrier="c@h:1")
    store.advance(iid, seq=seqs[1], activity=act(2, "r1"), placement=Placement.step("r2", NOW + 70),
                  context=("r1", {"n": 2}), noop=act(2, "r1", Outcome.NOOP), carrier="c@h:1",
                  statuses=RUNNING_ONLY)
    store.advance(iid, seq=seqs[2], activity=act(3, "r2"), placement=last, context=("r2", {"n": 3}),
                  noop=act(3, "r2", Outcome.NOOP), carrier="" if send else None, statuses=RUNNING_ONLY,
                  send=Envelope(queue, f"run w of {iid}") if send else None, forget=forget)
    return store.send_collected()


def state(store: RedisStore, iid: str) -> dict[str, Any]:
    """All Redis holds of ``iid``: its hash (its id left out, the moments of its writes named only),
    activities, run sets, indexes, TTLs, messages."""
    k, client = store.keys, store.client
    fields = {f.decode(): b"<when>" if f in (b"updated_at", b"finished_at") else v
              for f, v in client.hgetall(k.instance(iid)).items() if f != b"id"}
    return {
        "hash": fields,
        "activities": [{key: v for key, v in a.items() if key != "worker"} for a in store.activities(iid)],
        "statuses": sorted(s.value for s in InstanceStatus if client.sismember(k.run_status(RUN, s.value), iid)),
        "deadline": client.zscore(k.deadlines, iid), "timer": client.zscore(k.timers, iid),
        "queued": client.zscore(k.queued, iid) is not None,
        "expires": (client.ttl(k.instance(iid)) > 0, client.ttl(k.activities(iid)) > 0),
        "messages": [m.decode().replace(iid, "<id>") for m in client.lrange(f"{k.prefix}:queue", 0, -1)
                     if iid.encode() in m],
    }


def same(stores: tuple[RedisStore, RedisStore], change: Callable[[RedisStore, str], Any],
         before: Callable[[RedisStore, str], Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """``change`` made on a new instance through each path (``before`` first); both alike. Returns
    the fused path's reply and state."""
    out = []
    for store, iid in zip(stores, ("fused", "sequential"), strict=True):
        create(store, iid)
        if before is not None:
            before(store, iid)
        out.append((change(store, iid), state(store, iid)))
    assert out[0] == out[1]
    return out[0]


def test_a_chain_to_a_sent_step_lands_as_one_call_each_would(stores: tuple[RedisStore, RedisStore]) -> None:
    replies, after = same(stores, lambda s, i: held(s, i, Placement.queued_step("w", 30), send=True,
                                                   forget=("a",)))
    assert [(a.applied, a.status, a.seq) for a in replies] == [(True, InstanceStatus.RUNNING, n) for n in (2, 3, 4)]
    assert after["messages"] == ["run w of <id>"] and after["queued"] and after["deadline"] is None
    assert "c:a" not in after["hash"] and "c:r2" in after["hash"] and "carrier" not in after["hash"]
    assert after["hash"]["seq"] == b"4" and after["hash"]["step_timeout"] == b"30"


def test_a_chain_to_an_end_drops_its_entries_and_expires_like_calls_one_by_one(
        stores: tuple[RedisStore, RedisStore]) -> None:
    end = Placement.end("done", InstanceStatus.SUCCEEDED, result={"ok": True}, drop_on_success=("r1", "r2"))
    replies, after = same(stores, lambda s, i: held(s, i, end, forget=("a",)))
    assert replies[-1].status == InstanceStatus.SUCCEEDED
    assert after["statuses"] == ["succeeded"] and after["expires"] == (True, True)
    assert not [f for f in after["hash"] if f.startswith("c:") or f == "carrier"]
    assert {"finished_at", "result"} <= set(after["hash"]) and after["deadline"] is None


def test_a_stale_chain_records_its_noops_as_calls_one_by_one_do(stores: tuple[RedisStore, RedisStore]) -> None:
    replies, after = same(stores, lambda s, i: held(s, i, Placement.queued_step("w", 30), seqs=(1, 7, 3)))
    assert [(a.applied, a.seq) for a in replies] == [(True, 2), (False, 2), (False, 2)]
    assert after["hash"]["noops"] == b"2"


def test_a_paused_instance_takes_the_plain_path_alike(stores: tuple[RedisStore, RedisStore]) -> None:
    def pause(store: RedisStore, iid: str) -> None:
        assert store.control(iid, seq=1, statuses=RUNNING_ONLY, activity=act(1, "a", Outcome.CONTROL),
                             placement=Placement(InstanceStatus.PAUSED)).applied
    replies, after = same(stores, lambda s, i: held(s, i, Placement.queued_step("w", 30)), before=pause)
    assert [a.status for a in replies] == [InstanceStatus.PAUSED] * 3 and after["statuses"] == ["paused"]


@pytest.mark.parametrize("placement", [
    Placement.wait("nap", NOW + 600),
    Placement.awaiting("review", NOW + 900),
    Placement.awaiting("review", None),
    Placement.end("bad", InstanceStatus.FAILED, result={"why": "no"}),
    Placement.step("b", NOW + 30),
], ids=["wait", "await with a timeout", "await", "failed end", "step"])
def test_one_advance_after_a_backoff_with_an_error_lands_alike(stores: tuple[RedisStore, RedisStore],
                                                               placement: Placement) -> None:
    def backoff(store: RedisStore, iid: str) -> None:
        """A retry's backoff (a timer), an error, a batch and a quorum left on the instance."""
        assert store.retry(iid, seq=1, attempt=1, next_attempt=2, activity=act(1, "a", Outcome.RETRY),
                           placement=Placement(timer=NOW + 5, timer_kind="retry", inflight=False)).applied
        store.client.hset(store.keys.instance(iid), mapping={"error": "{}", "batch": "b#1", "quorum": "{}",
                                                              "carrier": "a:1:2@h:1"})

    def advance(store: RedisStore, iid: str) -> Applied:
        return store.advance(iid, seq=1, activity=act(1, "a"), placement=placement, context=("a", {"n": 1}),
                             carrier="")

    reply, after = same(stores, advance, before=backoff)
    assert reply.applied and reply.seq == 2
    assert not {"error", "batch", "quorum", "carrier"} & set(after["hash"])
    assert (after["timer"] is not None) == (placement.timer is not None)


def test_a_chain_of_three_transitions_is_a_handful_of_commands(stores: tuple[RedisStore, RedisStore]) -> None:
    fused, plain = stores
    if isinstance(fused.client, fakeredis.FakeRedis):
        pytest.skip("counts the commands a real Redis runs (MONITOR)")
    counts = {}
    for store, iid in ((fused, "fused"), (plain, "sequential")):
        create(store, iid)
        with store.client.monitor() as monitor:
            held(store, iid, Placement.queued_step("w", 30), send=True)
            store.client.echo(f"done {iid}")  # (the last line: everything before it has been seen)
            lines = []
            for line in monitor.listen():
                if line["command"] == f"ECHO done {iid}":
                    break
                if line.get("client_type") == "lua" and iid in line["command"]:
                    lines.append(line["command"].split()[0])
        counts[iid] = len(lines)
    assert counts["sequential"] >= 20
    assert counts["fused"] <= 8


def test_an_instance_never_queued_is_not_looked_for_in_the_queued_index(stores: tuple[RedisStore, RedisStore]) -> None:
    """Only an instance with a step timeout (sent and not yet moved on) can be in ``queued``: the
    others' changes run no ZREM on it. One that was sent leaves it."""
    for store, iid in zip(stores, ("fused", "sequential"), strict=True):
        if isinstance(store.client, fakeredis.FakeRedis):
            pytest.skip("reads the commands a real Redis runs (MONITOR)")
        create(store, iid)  # running at a deadline, never queued
        resent = f"{iid}-resent"
        create(store, resent)
        assert store.retry(resent, seq=1, attempt=1, next_attempt=2, activity=act(1, "a", Outcome.RETRY),
                           placement=Placement.queued_step("a", 45)).applied
        with store.client.monitor() as monitor:
            for one in (iid, resent):
                assert store.advance(one, seq=1, activity=act(1, "a"), placement=Placement.awaiting("review", None),
                                     context=("a", {"n": 1})).applied
            store.client.echo(f"done {iid}")
            removed = []
            for line in monitor.listen():
                if line["command"] == f"ECHO done {iid}":
                    break
                if line.get("client_type") == "lua" and line["command"].startswith(f"ZREM {store.keys.queued} "):
                    removed.append(line["command"].split()[-1])
        assert removed == [resent]
        assert store.client.zcard(store.keys.queued) == 0


def test_a_sent_steps_timeout_is_kept_only_while_it_is_sent(stores: tuple[RedisStore, RedisStore]) -> None:
    """``step_timeout`` serves the start of a sent step; an instance that moved on holds no such field
    (a hash of 17 fields takes twice the table of one of 16)."""
    def sent(store: RedisStore, iid: str) -> None:
        assert store.retry(iid, seq=1, attempt=1, next_attempt=2, activity=act(1, "a", Outcome.RETRY),
                           placement=Placement.queued_step("a", 45)).applied
        assert store.client.hget(store.keys.instance(iid), "step_timeout") == b"45"

    def onwards(store: RedisStore, iid: str) -> list[Any]:
        moved = store.advance(iid, seq=1, activity=act(1, "a"), placement=Placement.awaiting("review", None),
                              context=("a", {"n": 1}))
        return [moved, store.client.hget(store.keys.instance(iid), "step_timeout")]

    (moved, field), after = same(stores, onwards, before=sent)
    assert moved.status == InstanceStatus.AWAITING and field is None and not after["queued"]
