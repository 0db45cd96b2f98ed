"""Drained steps in batches (the default; ``TRADEFLOW_DRAIN_BATCH=0``: one by one): taken and started
together, their instances' ends held and sent with the next change, on the real Redis.

A batch's steps are all started before the first one runs; an instance whose step leaves it at an
await or a terminal node stays at that step until the thread's next change goes out (the next
instance's, before an action that writes) or the batch ends; each step still has its own records;
an error stops the batch with nothing held; an end whose round trip failed is sent again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from celery import Celery

from engine.api import Engine
from engine.app import sender_app
from engine.broker import RedisQueueEnqueuer
from engine.config import Settings
from engine.definitions.nodes import ServiceNode
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus, Outcome
from engine.runtime.concerns.draining import Draining
from engine.service import Transition
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import drain_queues, runtime_of, store_of

#: One step; then, when the instance's data says ``more``, a step of another service (a message is sent).
FLOW = {
    "name": "one-or-two",
    "start": "work",
    "nodes": {
        "work": {"type": "service", "service": "svc", "action": "work", "input": {},
                 "transitions": {"ok": "more"}},
        "more": {"type": "choice", "choices": [{"when": "data.more", "next": "other"}], "default": "done"},
        "other": {"type": "service", "service": "svc2", "action": "other", "input": {},
                  "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}


@pytest.fixture
def celery_app(redis_url: str, key_prefix: str) -> Celery:
    return sender_app(redis_url, f"{key_prefix}:q:", "drain-batch-test")


def _engine(celery_app: Celery, real_redis: redis.Redis, key_prefix: str, limit: int) -> Engine:
    enqueuer = RedisQueueEnqueuer.for_app(celery_app, real_redis)
    engine = Engine(RedisStore(real_redis, Keys(key_prefix)), enqueuer)
    drain_queues(engine, limit, batched=True)
    engine.publish(load_definition(json.dumps(FLOW)))
    return engine


#: A release time no step of these tests reaches, however busy the machine.
NEVER = 3600.0


def _release_of(engine: Engine) -> Any:
    """The draining concern's release of ``engine`` (its ``after``: seconds a step runs before the rest go back)."""
    draining = runtime_of(engine).hook(Draining)
    assert isinstance(draining, Draining)
    return draining.release


def _releasing_engine(celery_app: Celery, real_redis: redis.Redis, key_prefix: str) -> Engine:
    """An engine draining batches of 4 whose batch sends its steps back after a step has run 0.3 s."""
    engine = _engine(celery_app, real_redis, key_prefix, limit=4)
    _release_of(engine).after = 0.3
    return engine


def _queued_soon(engine: Engine, count: int) -> int:
    """The steps in the ``svc`` queue once there are ``count`` of them (or after 30 s)."""
    deadline = time.monotonic() + 30
    while runtime_of(engine).enqueuer.count(["svc"]) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return runtime_of(engine).enqueuer.count(["svc"])


def _drain(engine: Engine, work: Any) -> int:
    return runtime_of(engine).after_delivery("svc", lambda task: task == "svc.work", work, None)


@contextmanager
def _stuck(drain: Callable[[Engine, Any], int], engine: Engine, work: Any, hang: threading.Event) -> Iterator[None]:
    """``drain(engine, work)`` on a thread named ``stuck`` while the block runs (one of its actions waits
    for ``hang``); then ``hang`` is set and the thread joined."""
    stuck = threading.Thread(target=drain, args=(engine, work), name="stuck")
    stuck.start()
    try:
        yield
    finally:
        hang.set()
        stuck.join(30)


def test_batches_are_the_default_and_the_setting_turns_them_off() -> None:
    assert Settings.from_env({}).drain_batch and Settings().drain_batch
    assert not Settings.from_env({"TRADEFLOW_DRAIN_BATCH": "0"}).drain_batch


def test_a_batch_is_started_together_and_its_ends_are_sent_together(celery_app: Celery, real_redis: redis.Redis,
                                                                     key_prefix: str) -> None:
    engine = _engine(celery_app, real_redis, key_prefix, limit=4)
    ids = engine.start_many("one-or-two", [{"more": False} for _ in range(6)])
    seen: list[list[InstanceStatus]] = []

    def work(node: Any, payload: Any) -> Transition:
        assert store_of(engine).queued_count() == 2  # the batch's four were started before the first ran
        seen.append([engine.get(iid).status for iid in ids[:4]])
        return Transition("ok")

    assert _drain(engine, work) == 4
    assert seen[-1] == [InstanceStatus.RUNNING] * 4  # the ends before it are held while the last one runs
    done = [engine.get(iid) for iid in ids]
    assert [i.status for i in done] == [InstanceStatus.SUCCEEDED] * 4 + [InstanceStatus.RUNNING] * 2
    for instance in done[:4]:
        assert [a["outcome"] for a in engine.activities(instance.id)] == [Outcome.STARTED.value,
                                                                         Outcome.APPLIED.value]
    assert runtime_of(engine).enqueuer.count(["svc"]) == 2  # the other two still wait in the queue


def test_a_held_end_goes_with_the_next_instances_change(celery_app: Celery, real_redis: redis.Redis,
                                                        key_prefix: str) -> None:
    engine = _engine(celery_app, real_redis, key_prefix, limit=3)
    ids = engine.start_many("one-or-two", [{"more": False}, {"more": True}, {"more": False}])
    seen: list[list[InstanceStatus]] = []

    def work(node: Any, payload: Any) -> Transition:
        seen.append([engine.get(iid).status for iid in ids])
        return Transition("ok")

    assert _drain(engine, work) == 3
    # the first one's end went out with the second one's change (which sends the next step's message)
    assert seen[2][0] is InstanceStatus.SUCCEEDED and seen[1][0] is InstanceStatus.RUNNING
    assert engine.get(ids[1]).node == "other" and runtime_of(engine).enqueuer.count(["svc2"]) == 1
    assert engine.get(ids[2]).status is InstanceStatus.SUCCEEDED


def test_an_error_stops_the_batch_with_nothing_held(celery_app: Celery, real_redis: redis.Redis,
                                                    key_prefix: str) -> None:
    engine = _engine(celery_app, real_redis, key_prefix, limit=3)
    ids = engine.start_many("one-or-two", [{"more": False} for _ in range(3)])
    calls: list[int] = []

    def second_stops(node: Any, payload: Any) -> Transition:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the worker is being stopped while it runs the second one
        return Transition("ok")

    with pytest.raises(KeyboardInterrupt):
        _drain(engine, second_stops)
    # the first one's held end was sent when the batch stopped; the other two stay started, at their step,
    # for the liveness sweep (this process stops) or their timeout to send again
    assert [engine.get(iid).status for iid in ids] == [InstanceStatus.SUCCEEDED] + [InstanceStatus.RUNNING] * 2
    assert runtime_of(engine).enqueuer.count(["svc"]) == 0 and store_of(engine).queued_count() == 0


def test_a_held_end_whose_round_trip_failed_is_sent_again(celery_app: Celery, real_redis: redis.Redis,
                                                          key_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _engine(celery_app, real_redis, key_prefix, limit=1)
    [iid] = engine.start_many("one-or-two", [{"more": False}])
    runtime = runtime_of(engine)
    real_apply = runtime.apply_changes
    failures = [redis.ConnectionError("Redis went away")]

    def flaky(changes: Any, *args: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_apply(changes, *args)

    monkeypatch.setattr(runtime, "apply_changes", flaky)
    assert _drain(engine, lambda node, payload: Transition("ok")) == 1  # the failed round trip was tried again
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED and not failures


def test_a_duplicate_message_in_a_batch_is_a_no_op_and_its_action_never_runs(
        celery_app: Celery, real_redis: redis.Redis, key_prefix: str) -> None:
    engine = _engine(celery_app, real_redis, key_prefix, limit=4)
    first, second = engine.start_many("one-or-two", [{"more": False}, {"more": False}])
    runtime = runtime_of(engine)
    definition = store_of(engine).definition("one-or-two", 1)
    runtime.enqueuer.enqueue(runtime.message(definition, first, "work", 1, 1))  # the same step, sent again
    ran: list[str] = []

    def work(node: Any, payload: Any) -> Transition:
        ran.append("work")
        return Transition("ok")

    assert _drain(engine, work) == 3  # both steps, then the duplicate after them
    assert len(ran) == 2  # the duplicate started after the first one's change: it found the instance moved on
    assert [engine.get(iid).status for iid in (first, second)] == [InstanceStatus.SUCCEEDED] * 2
    outcomes = [a["outcome"] for a in engine.activities(first)]
    assert outcomes.count(Outcome.APPLIED.value) == 1 and Outcome.NOOP.value in outcomes


def test_a_batchs_starts_are_one_script_call_that_does_what_each_start_does_alone(
        real_redis: redis.Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.api import StartItem
    from engine.broker import MemoryEnqueuer
    from engine.clock import ManualClock
    from engine.store import instances

    def side(name: str) -> RedisStore:
        store = RedisStore(real_redis, Keys(f"{key_prefix}:{name}"))
        engine = Engine(store, MemoryEnqueuer(), ManualClock(1_750_000_000.0))
        engine.publish(load_definition(json.dumps(FLOW)))
        engine.start_many("one-or-two", [StartItem({"more": False}, f"i{n}") for n in range(3)])
        return store

    together, alone = side("together"), side("alone")
    # i0 and i2 start their step; i1 is asked for a step it is not at (no carrier, stays queued); gone is missing
    steps = [("i0", "work", 1, 1, "work:1:1@h:1"), ("i1", "work", 5, 1, "work:5:1@h:1"),
             ("gone", "work", 1, 1, "work:1:1@h:1"), ("i2", "work", 1, 1, "work:1:1@h:1")]
    calls: list[str] = []
    run_script = instances.run_script
    monkeypatch.setattr(instances, "run_script", lambda c, s, keys, args: (
        calls.append(json.loads(args[0])["op"]), run_script(c, s, keys, args))[1])
    together.prefetch_starts(steps, lambda: 1_750_000_100.0)
    assert calls == ["start_many"]  # one script call for the batch
    read_together = [together.start(i, n, s, a, 1_750_000_100.0, c) for i, n, s, a, c in steps]
    assert calls == ["start_many"]  # each start took the kept reply: no call of its own
    read_alone = [alone.start(i, n, s, a, 1_750_000_100.0, c) for i, n, s, a, c in steps]
    assert calls == ["start_many"] + ["start"] * 4
    assert [i and (i.id, i.seq, i.status) for i in read_together] == \
        [i and (i.id, i.seq, i.status) for i in read_alone] == \
        [("i0", 1, InstanceStatus.RUNNING), ("i1", 1, InstanceStatus.RUNNING), None,
         ("i2", 1, InstanceStatus.RUNNING)]
    for store in (together, alone):
        loaded = {iid: store.load(iid) for iid in ("i0", "i1", "i2")}
        assert [i and i.carrier for i in loaded.values()] == ["work:1:1@h:1", None, "work:1:1@h:1"]
        assert sorted(m.decode() for m in real_redis.zrange(store.keys.deadlines, 0, -1)) == ["i0", "i2"]
        assert [m.decode() for m in real_redis.zrange(store.keys.queued, 0, -1)] == ["i1"]
    # each started step's timeout counts from the start's time, in both
    deadline = [real_redis.zscore(store.keys.deadlines, "i0") for store in (together, alone)]
    assert deadline[0] == deadline[1] and 1_750_000_100.0 < deadline[0] <= 1_750_000_100.0 + 3600


def test_a_step_that_runs_long_sends_the_rest_of_its_batch_back_for_others_to_run(
        celery_app: Celery, real_redis: redis.Redis, key_prefix: str) -> None:
    engine = _releasing_engine(celery_app, real_redis, key_prefix)
    ids = engine.start_many("one-or-two", [{"more": False} for _ in range(4)])
    hang, ran = threading.Event(), []

    def work(node: Any, payload: Any) -> Transition:
        ran.append(threading.current_thread().name)
        if len(ran) == 1:
            assert hang.wait(60), "the test never let the first step go"
        return Transition("ok")

    with _stuck(_drain, engine, work, hang):
        # the three steps behind the one that hangs went back to the queue: another thread runs them
        assert _queued_soon(engine, 3) == 3
        _release_of(engine).after = NEVER  # (that thread's batch is not released, however slow its steps)
        assert _drain(engine, work) == 3
        assert [engine.get(iid).status for iid in ids] == [InstanceStatus.RUNNING] + [InstanceStatus.SUCCEEDED] * 3
    assert engine.get(ids[0]).status is InstanceStatus.SUCCEEDED
    assert sorted(ran) == ["MainThread"] * 3 + ["stuck"]  # each action ran once


def test_steps_that_cannot_go_back_to_their_queue_are_run_by_their_batch_after_all(
        celery_app: Celery, real_redis: redis.Redis, key_prefix: str) -> None:
    engine = _releasing_engine(celery_app, real_redis, key_prefix)
    tried = threading.Event()

    def unreachable(taken: Any) -> None:  # Redis does not answer the give-back
        if taken:
            tried.set()
            raise redis.ConnectionError("Redis unreachable")

    runtime_of(engine).drain.give_back = unreachable  # type: ignore[method-assign]
    ids = engine.start_many("one-or-two", [{"more": False} for _ in range(4)])
    ran: list[str] = []

    def work(node: Any, payload: Any) -> Transition:
        ran.append(threading.current_thread().name)
        if len(ran) == 1:
            assert tried.wait(60), "the release never tried to send the steps back"
        return Transition("ok")

    assert _drain(engine, work) == 4  # the three it could not send back ran here, after the slow one
    assert ran == ["MainThread"] * 4  # each action once, all on the batch's own thread
    assert [engine.get(iid).status for iid in ids] == [InstanceStatus.SUCCEEDED] * 4


#: A step that only reads, then, run inline after it, a step that writes.
READ_THEN_WRITE = {
    "name": "read-then-write",
    "start": "read",
    "nodes": {
        "read": {"type": "service", "service": "svc", "action": "read", "input": {"n": "data.n"},
                 "transitions": {"ok": "write"}},
        "write": {"type": "service", "service": "svc", "action": "write", "input": {"n": "data.n"},
                  "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}


class _InlineRule:
    """A worker running every service step inline; ``read`` only reads."""

    def __call__(self, node: Any) -> bool:
        return isinstance(node, ServiceNode)

    def reads_only(self, node: Any) -> bool:
        return isinstance(node, ServiceNode) and node.action == "read"


def _read_then_write(celery_app: Celery, real_redis: redis.Redis, key_prefix: str,
                     count: int) -> tuple[Engine, list[str]]:
    engine = _engine(celery_app, real_redis, key_prefix, limit=4)
    engine.publish(load_definition(json.dumps(READ_THEN_WRITE)))
    return engine, engine.start_many("read-then-write", [{"n": n} for n in range(count)])


def _drain_inline(engine: Engine, work: Any) -> int:
    return runtime_of(engine).after_delivery("svc", lambda task: task in ("svc.read", "svc.write"), work,
                                             _InlineRule())


def test_a_batch_reads_first_then_confirms_every_instance_in_one_round_trip_then_writes(
        celery_app: Celery, real_redis: redis.Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, ids = _read_then_write(celery_app, real_redis, key_prefix, 3)
    runtime = runtime_of(engine)
    sent: list[int] = []
    real_apply = runtime.apply_changes
    monkeypatch.setattr(runtime, "apply_changes", lambda changes, *args: (sent.append(len(changes)),
                                                                          real_apply(changes, *args))[1])
    ran: list[tuple[str, int]] = []
    nodes_at_first_write: list[list[str | None]] = []

    def work(node: Any, payload: Any) -> Transition:
        if node.action == "write" and not nodes_at_first_write:
            nodes_at_first_write.append([engine.get(iid).node for iid in ids])
        ran.append((node.action, payload["n"]))
        return Transition("ok")

    assert _drain_inline(engine, work) == 3
    assert ran == [("read", 0), ("read", 1), ("read", 2), ("write", 0), ("write", 1), ("write", 2)]
    assert nodes_at_first_write == [["write"] * 3]  # each write ran after all three were confirmed at it
    assert sent == [3, 3]  # one round trip for the three transitions into write, one for the three ends
    for iid in ids:
        assert engine.get(iid).status is InstanceStatus.SUCCEEDED
        assert [(a["node"], a["outcome"]) for a in engine.activities(iid)][1:] == [
            ("read", Outcome.APPLIED.value), ("write", Outcome.APPLIED.value)]


def test_an_instance_paused_while_its_batch_reads_does_not_write(celery_app: Celery, real_redis: redis.Redis,
                                                                 key_prefix: str) -> None:
    engine, ids = _read_then_write(celery_app, real_redis, key_prefix, 3)
    written: list[int] = []

    def work(node: Any, payload: Any) -> Transition:
        if node.action == "read" and payload["n"] == 2:
            engine.pause(ids[1], "held by an operator")  # after its read, before the batch is confirmed
        if node.action == "write":
            written.append(payload["n"])
        return Transition("ok")

    assert _drain_inline(engine, work) == 3
    assert written == [0, 2]
    paused = engine.get(ids[1])
    assert (paused.status, paused.node) == (InstanceStatus.PAUSED, "write")  # resume sends its write step
    assert [engine.get(iid).status for iid in (ids[0], ids[2])] == [InstanceStatus.SUCCEEDED] * 2


@pytest.mark.parametrize("applied", [False, True], ids=["lost-before-redis", "reply-lost"])
def test_a_failed_confirmation_runs_each_step_again_and_every_write_once(
        celery_app: Celery, real_redis: redis.Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch,
        applied: bool) -> None:
    engine, ids = _read_then_write(celery_app, real_redis, key_prefix, 3)
    runtime = runtime_of(engine)
    real_send = runtime.send_pending
    failures = [redis.ConnectionError("Redis went away")]

    def flaky() -> Any:
        if failures:
            if applied:
                real_send()
            raise failures.pop()
        return real_send()

    monkeypatch.setattr(runtime, "send_pending", flaky)
    ran: list[tuple[str, int]] = []

    def work(node: Any, payload: Any) -> Transition:
        ran.append((node.action, payload["n"]))
        return Transition("ok")

    assert _drain_inline(engine, work) == 3
    assert not failures
    assert sorted(n for action, n in ran if action == "write") == [0, 1, 2]  # every write once
    # reads run again where the transitions were lost; where they applied, each instance resumes at its write
    assert len([n for action, n in ran if action == "read"]) == (3 if applied else 6)
    assert [engine.get(iid).status for iid in ids] == [InstanceStatus.SUCCEEDED] * 3


def test_an_action_with_external_effects_runs_right_after_its_own_instance_is_confirmed(
        celery_app: Celery, real_redis: redis.Redis, key_prefix: str) -> None:
    engine = _engine(celery_app, real_redis, key_prefix, limit=4)
    external = json.loads(json.dumps(READ_THEN_WRITE))
    external["nodes"]["write"].update({"effect": "external", "shadow": "stop"})
    engine.publish(load_definition(json.dumps(external)))
    ids = engine.start_many("read-then-write", [{"n": n} for n in range(2)])
    ran: list[tuple[str, int]] = []

    def work(node: Any, payload: Any) -> Transition:
        ran.append((node.action, payload["n"]))
        return Transition("ok")

    assert _drain_inline(engine, work) == 2
    assert ran == [("read", 0), ("write", 0), ("read", 1), ("write", 1)]  # not held for the batch
    assert [engine.get(iid).status for iid in ids] == [InstanceStatus.SUCCEEDED] * 2


def test_a_writing_action_that_runs_long_hands_the_confirmed_ones_after_it_to_their_queue(
        celery_app: Celery, real_redis: redis.Redis, key_prefix: str) -> None:
    engine = _releasing_engine(celery_app, real_redis, key_prefix)
    release = _release_of(engine)
    release.after = NEVER  # until the write that hangs: the steps before it are not released, however slow
    engine.publish(load_definition(json.dumps(READ_THEN_WRITE)))
    ids = engine.start_many("read-then-write", [{"n": n} for n in range(4)])
    hang, ran = threading.Event(), []

    def work(node: Any, payload: Any) -> Transition:
        ran.append((node.action, payload["n"], threading.current_thread().name))
        if node.action == "write" and payload["n"] == 1:
            release.after = 0.3
            assert hang.wait(60), "the test never let the second write go"
        return Transition("ok")

    with _stuck(_drain_inline, engine, work, hang):
        # the two confirmed at their write behind the one that hangs went to the queue, a message each,
        # and the end the stuck thread held for the first one went out: it does not wait either
        assert _queued_soon(engine, 2) == 2
        assert [engine.get(iid).status for iid in ids[:2]] == [InstanceStatus.SUCCEEDED, InstanceStatus.RUNNING]
        assert [engine.get(iid).node for iid in ids[2:]] == ["write"] * 2
        release.after = NEVER
        assert _drain_inline(engine, work) == 2
        assert [engine.get(iid).status for iid in ids[2:]] == [InstanceStatus.SUCCEEDED] * 2
    assert engine.get(ids[1]).status is InstanceStatus.SUCCEEDED
    writes = sorted((n, thread) for action, n, thread in ran if action == "write")
    assert writes == [(0, "stuck"), (1, "stuck"), (2, "MainThread"), (3, "MainThread")]  # each once
    assert sorted(n for action, n, _ in ran if action == "read") == [0, 1, 2, 3]
