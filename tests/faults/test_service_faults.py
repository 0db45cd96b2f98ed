"""Scenario 8: a service that raises, hangs past its timeout, answers an unknown transition or a
malformed payload.

Pass criterion: that instance -- and only that one -- fails, with node, service, action and
the reason in its error; retries are bounded (counted in the activity list and in the
service's own call counter); the healthy instances of the same run all succeed, and their
completion time with the faulty ones among them stays within a generous factor of the same
run without them (figures printed; recorded in RELIABILITY.md).

Run: ``.venv/bin/pytest -s tests/faults/test_service_faults.py``
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import tests.faults.misbehaving_services as faulty
from engine.api import Engine, StartItem
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus
from engine.ops.fleet import FleetSpec
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver, runtime_of, store_of
from tests.faults.shared_redis_fleet import SharedFleet, shared_fleet

ATTEMPTS = 3  # node b's retry policy, and the sweeper's minimum for a step that makes no progress
TIMEOUT = 3.0  # node b's timeout_seconds


def _step(node: str, nxt: str, **extra: Any) -> dict[str, Any]:
    return {"type": "service", "service": "faulty", "action": "work", "transitions": {"ok": nxt},
            "input": {"key": "data.key", "mode": "data.mode", "node": f"'{node}'"}, **extra}


DEFINITION = load_definition(json.dumps({
    "name": "faulty-flow",
    "start": "a",
    "nodes": {
        "a": _step("a", "b"),
        "b": _step("b", "c", retry={"max_attempts": ATTEMPTS, "backoff_seconds": 0.2, "backoff_rate": 1.0},
                   timeout_seconds=TIMEOUT),
        "c": _step("c", "done"),
        "done": {"type": "terminal", "status": "succeeded"},
    },
}))

#: mode -> (the error's type, a fragment of its reason, executions of node b)
EXPECTED = {
    "raise": ("RuntimeError", "the service is down (after 3 attempts)", ATTEMPTS),
    "unknown": ("StepFailed", "sideways", 1),
    "not_transition": ("MalformedAnswer", "an action must return a Transition", 1),
    "not_json": ("MalformedAnswer", "transition data is not plain JSON: Object of type set", 1),
    "hang": ("Timeout", f"no progress within {TIMEOUT:g}s", ATTEMPTS),
}


def _outcomes(engine: Engine, iid: str, node: str = "b") -> list[str]:
    return [a["outcome"] for a in engine.activities(iid) if a.get("node") == node]


def _assert_failed_at_b(engine: Engine, iid: str, mode: str) -> None:
    instance = engine.get(iid)
    error_type, fragment, _ = EXPECTED[mode]
    assert instance.status is InstanceStatus.FAILED, (mode, instance.status, instance.error)
    assert instance.node == "b"
    assert {k: instance.error[k] for k in ("node", "service", "action", "type")} == {
        "node": "b", "service": "faulty", "action": "work", "type": error_type}, instance.error
    assert fragment in instance.error["reason"], instance.error
    assert "c" not in instance.context  # nothing after the failed node ran


# --------------------------------------------------------------------------- in-process, one message at a time


@pytest.fixture
def driven(real_redis: redis.Redis, redis_url: str, key_prefix: str,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Engine, Driver, ManualClock]]:
    monkeypatch.setenv("TRADEFLOW_REDIS_URL", redis_url)
    monkeypatch.setenv("TRADEFLOW_KEY_PREFIX", key_prefix)
    clock = ManualClock(1_800_000_000.0)
    engine = Engine(RedisStore(real_redis, Keys(key_prefix)), MemoryEnqueuer(), clock)
    engine.publish(DEFINITION, alias="production")
    yield engine, Driver(engine), clock


@pytest.mark.parametrize("mode", ["raise", "unknown", "not_transition", "not_json"])
def test_a_misbehaving_service_fails_its_instance_only_with_node_service_and_reason(
        driven: tuple[Engine, Driver, ManualClock], real_redis: redis.Redis, key_prefix: str, mode: str) -> None:
    engine, driver, clock = driven
    bad = engine.start("faulty-flow", {"key": "bad", "mode": mode})
    good = engine.start("faulty-flow", {"key": "good", "mode": "ok"})
    for _ in range(ATTEMPTS + 2):
        driver.run_until_idle()
        clock.advance(1)  # past the retry backoff
    _assert_failed_at_b(engine, bad, mode)
    assert engine.get(good).status is InstanceStatus.SUCCEEDED
    executions = int(real_redis.hget(faulty.calls_key(key_prefix), "bad:b") or 0)
    outcomes = _outcomes(engine, bad)
    assert executions == EXPECTED[mode][2] == len(outcomes)  # bounded: one activity per execution
    assert outcomes == ["retry"] * (executions - 1) + ["failed"]


def test_a_step_that_never_answers_is_resent_then_failed_with_a_timeout(
        driven: tuple[Engine, Driver, ManualClock]) -> None:
    engine, driver, clock = driven
    iid = engine.start("faulty-flow", {"key": "lost", "mode": "ok"})
    driver.step()  # a
    for _ in range(ATTEMPTS + 2):  # every attempt of b starts and hangs (or its worker dies): the sweeper decides
        if driver.queue.messages:
            message = driver.queue.pop()
            store_of(engine).start(message.instance_id, message.node, message.seq, message.attempt, clock())
        clock.advance(TIMEOUT + 6)
        runtime_of(engine).sweep()
    _assert_failed_at_b(engine, iid, "hang")
    assert f"gave up after {ATTEMPTS} attempts" in engine.get(iid).error["reason"]
    assert _outcomes(engine, iid) == ["retry"] * (ATTEMPTS - 1) + ["failed"]


# --------------------------------------------------------------------------- real workers


@pytest.fixture(scope="module")
def live(redis_url: str) -> Iterator[SharedFleet]:
    specs = [FleetSpec("engine", "threads", 4), FleetSpec("faulty", "threads", 12)]
    with shared_fleet(redis_url, "tests.faults.misbehaving_services", specs, name="svc") as fleet:
        fleet.engine.publish(DEFINITION, alias="production")
        yield fleet


def _healthy_done(live: SharedFleet, ids: list[str]) -> bool:
    return all(i.status.is_terminal for i in store_of(live.engine).load_many(ids))


def _run(live: SharedFleet, run: str, healthy: int, faulty_modes: list[str]) -> tuple[float, list[str], list[str]]:
    """Start ``healthy`` good instances with the faulty ones interleaved; seconds until the good ones finish."""
    items = [StartItem({"key": f"{run}-ok-{n}", "mode": "ok"}, f"{run}-ok-{n}") for n in range(healthy)]
    step = max(1, healthy // max(1, len(faulty_modes)))
    for n, mode in enumerate(faulty_modes):
        items.insert(n * step, StartItem({"key": f"{run}-{mode}-{n}", "mode": mode}, f"{run}-{mode}-{n}"))
    good = [i.instance_id for i in items if "-ok-" in (i.instance_id or "")]
    bad = [i.instance_id for i in items if "-ok-" not in (i.instance_id or "")]
    start = time.monotonic()
    live.engine.start_many("faulty-flow", items, run=run)
    live.wait_until(lambda: _healthy_done(live, good), 120, f"the healthy instances of {run}")
    return time.monotonic() - start, good, bad  # type: ignore[return-value]


@pytest.mark.slow
def test_on_real_workers_faulty_instances_fail_alone_and_the_rest_keeps_its_throughput(live: SharedFleet) -> None:
    healthy = 400
    modes = ["raise", "hang", "unknown", "not_transition", "not_json"] * 2
    _run(live, "warmup", 20, [])
    baseline, good_a, _ = _run(live, "clean", healthy, [])
    mixed, good_b, bad = _run(live, "mixed", healthy, modes)
    for iid in good_a + good_b:
        assert live.engine.get(iid).status is InstanceStatus.SUCCEEDED, live.engine.get(iid).error
    # The healthy ones finished while every hung call was still hanging (none has returned: a
    # return is recorded as a no-op): nobody waited for a hung call. The times are figures.
    hanging = [iid for iid in bad if "-hang-" in iid]
    assert all("noop" not in _outcomes(live.engine, iid) for iid in hanging)
    live.wait_run("mixed", timeout=120)
    live.client.set(faulty.release_key(live.prefix), 1)  # the hung calls return now, late
    calls = {k.decode(): int(v) for k, v in live.client.hgetall(faulty.calls_key(live.prefix)).items()}
    for iid in bad:
        mode = iid.split("-")[1]
        _assert_failed_at_b(live.engine, iid, mode)
        assert calls[f"{iid}:b"] == EXPECTED[mode][2], (iid, calls[f"{iid}:b"])  # retries are bounded
        assert _outcomes(live.engine, iid)[:EXPECTED[mode][2]] == ["retry"] * (EXPECTED[mode][2] - 1) + ["failed"]
    hung = hanging
    live.wait_until(lambda: all(len(_outcomes(live.engine, i)) == 2 * ATTEMPTS for i in hung), 60,
                    "the hung calls to come back")
    for iid in hung:  # each late answer is a recorded no-op; the failure stands
        assert _outcomes(live.engine, iid)[ATTEMPTS:] == ["noop"] * ATTEMPTS
        assert live.engine.get(iid).status is InstanceStatus.FAILED
    print(f"\nscenario 8: {healthy} healthy instances x 3 steps: {baseline:.1f} s alone, {mixed:.1f} s with "
          f"{len(bad)} faulty ones in the same run ({mixed / baseline:.2f}x); faulty: "
          + ", ".join(f"{iid.split('-')[1]} {calls[f'{iid}:b']} call(s)" for iid in bad[:5]))
