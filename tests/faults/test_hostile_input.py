"""Scenario 9: hostile input.

Pass criteria:

- Definitions carrying hostile expressions (code injection, huge numbers, deep nesting, giant
  strings and documents, list repetition, a regex pattern taken from data) are rejected by
  validation -- what ``publish`` and ``tradeflow definitions validate`` run -- each within
  64 MB of Python allocations (tracemalloc; the process's peak RSS grows by less than 256 MB
  over all of them), and nothing runs: no marker file, no call of eval/exec/open/system.
- Expressions that pass validation but blow up at run time (overflow, ``list * int``, a
  runaway comprehension, a literal regex over 100,000 characters of data) fail their instance
  with an ExpressionError (the comprehension: its work budget, counted in steps), and the
  other instances go on.

No verdict depends on elapsed time: the bounds are in work and size, so a busy machine gives
the same verdicts; the times are printed as figures.
- A pickled message, a YAML one and one of an unknown content type, published raw on a real
  worker's queue with kombu, are refused: the pickle's ``__reduce__`` never runs (marker file
  absent), the queue is left empty, and the worker keeps serving the next instance.
- Malformed account data in the RedisBook (garbage cash, garbage lots, an account record that
  is not JSON, one with an impossible region) fails only that account, with the reason: the
  morning run starts every other account, names the unreadable records in
  ``RunStarted.invalid_accounts``, and fails the unreadable holdings at ``fetch_holdings``.

Run: ``.venv/bin/pytest -s tests/faults/test_hostile_input.py``
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import resource
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Exchange, Queue

import order_calc.actions  # noqa: F401  (registers order_calc.plan_orders for the Driver)
import portfolio_manager.actions as pm_actions
from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.errors import DefinitionError
from engine.instance import InstanceStatus
from engine.ops.fleet import FleetSpec
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver, enqueuer_of
from portfolio_manager.actions import build_services
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import ensure_definitions, instance_id_for, start_daily_rebalance
from portfolio_manager.demo import failure_reason
from portfolio_manager.generator import GeneratorConfig, seed_book
from tests.faults.shared_redis_fleet import SharedFleet, shared_fleet

MEMORY_BOUND = 64 * 2**20  # bytes of Python allocations per hostile input
RSS_BOUND = 256 * 2**10  # KiB the process's peak RSS may grow over all of them


def _document(expression: str = "data.x", *, where: str = "input", raw_parameters: str = "{}") -> str:
    """A small valid definition with ``expression`` placed in an input, a choice, a wait or a result."""
    nodes: dict[str, Any] = {
        "a": {"type": "service", "service": "s", "action": "a", "input": {"x": "data.x"},
              "transitions": {"ok": "pick"}},
        "pick": {"type": "choice", "choices": [{"when": "data.x == 1", "next": "later"}], "default": "done"},
        "later": {"type": "wait", "until": "now()", "next": "done"},
        "done": {"type": "terminal", "status": "succeeded", "result": {"x": "data.x"}},
    }
    target = {"input": nodes["a"]["input"], "result": nodes["done"]["result"]}
    if where in target:
        target[where]["x"] = expression
    elif where == "when":
        nodes["pick"]["choices"][0]["when"] = expression
    else:
        nodes["later"]["until"] = expression
    text = json.dumps({"name": "hostile", "start": "a", "parameters": {}, "nodes": nodes})
    return text.replace('"parameters": {}', f'"parameters": {raw_parameters}')


def _hostile_definitions(marker: Path) -> dict[str, str]:
    touch = f"__import__('os').system('touch {marker}')"
    return {
        "import-in-input": _document(touch),
        "import-in-when": _document(touch, where="when"),
        "import-in-until": _document(touch, where="until"),
        "import-in-result": _document(f"data.x + {touch}", where="result"),
        "dunder-attribute": _document("data.__class__.__mro__"),
        "eval": _document(f"eval('{touch}')"),
        "open": _document(f"open('{marker}', 'w')"),
        "python-power": _document("2 ** 99999999"),
        "list-repetition-literal": _document("[" + ", ".join(["[1, 2, 3]"] * 300) + "]"),
        "many-additions": _document(" + ".join(["[1]"] * 100)),
        "deep-brackets": _document("(" * 500 + "1" + ")" * 500),
        "deep-json": _document(raw_parameters="[" * 100_000 + "]" * 100_000),
        "huge-integer-json": _document(raw_parameters='{"x": ' + "9" * 100_000 + "}"),
        "huge-float-json": _document(raw_parameters='{"x": 1e999999}'),
        "nan-json": _document(raw_parameters='{"x": NaN}'),
        "giant-string-literal": _document("'" + "a" * 100_000 + "'"),
        "giant-document": _document(raw_parameters=json.dumps({"x": "a" * 20_000_000})),
        "regex-pattern-from-data": _document("data.text.matches(data.pattern)"),
        "regex-pattern-built": _document("data.text.matches('(' + data.pattern + ')')"),
        "regex-counted-repetitions": _document("data.text.matches('((a{30}){30}){10}x')"),
        "comprehension-nesting": _document("[1].map(a, [1].map(b, [1].map(c, [1].map(d, d))))"),
        "unknown-function": _document("system('ls')"),
    }


class _Spy:
    """Counts calls of the dangerous builtins and os functions while installed."""

    NAMES = (("builtins", "eval"), ("builtins", "exec"), ("builtins", "open"), ("os", "system"), ("os", "popen"))

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for module_name, name in self.NAMES:
            module = builtins if module_name == "builtins" else os
            original = getattr(module, name)
            monkeypatch.setattr(module, name, self._wrap(f"{module_name}.{name}", original))

    def _wrap(self, label: str, original: Any) -> Any:
        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(label)
            return original(*args, **kwargs)

        return spy


def test_hostile_definitions_are_rejected_in_bounded_time_and_memory_and_run_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    cases = _hostile_definitions(marker)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    figures = []
    spy = _Spy(monkeypatch)
    for name, text in cases.items():
        tracemalloc.start()
        start = time.perf_counter()
        with pytest.raises(DefinitionError) as info:
            load_definition(text, f"{name}.json")
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        figures.append((name, elapsed, peak, str(info.value).splitlines()[0][:110]))
        assert peak < MEMORY_BOUND, figures[-1]
        assert f"{name}.json: /" in str(info.value)  # the problem names the file and the place
    monkeypatch.undo()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert spy.calls == [] and not marker.exists()
    assert rss_growth < RSS_BOUND, rss_growth
    slowest, largest = max(f[1] for f in figures), max(f[2] for f in figures)
    print(f"\nscenario 9: {len(cases)} hostile definitions rejected; slowest {slowest * 1000:.1f} ms, largest "
          f"Python peak {largest / 2**20:.1f} MB, peak RSS growth {rss_growth / 1024:.0f} MB")
    for name, elapsed, peak, reason in figures:
        print(f"  {name:26} {elapsed * 1000:7.1f} ms {peak / 2**20:6.1f} MB  {reason}")


# --------------------------------------------------------------------------- accepted, but failing at run time


RUNTIME_BOMBS = {  # name -> (expression, the instance's end)
    "overflow": ("9223372036854775807 * 9223372036854775807", InstanceStatus.FAILED),
    "list-times-int": ("[1, 2, 3] * 100000000", InstanceStatus.FAILED),
    "string-times-int": ("'a' * 100000000", InstanceStatus.FAILED),
    "runaway-comprehension": ("data.big.map(x, data.big.map(y, y)).size()", InstanceStatus.FAILED),
    "map-of-big-lists": ("data.big.map(x, data.big).size()", InstanceStatus.FAILED),
    "nested-quantifiers-over-big-text": ("data.text.matches('(a+)+$')", InstanceStatus.SUCCEEDED),
    "regex-of-1000-states": ("data.text.matches('(a{10}){99}x')", InstanceStatus.SUCCEEDED),
}


def test_expressions_that_blow_up_at_run_time_fail_their_instance_only_and_fast(
        real_redis: redis.Redis, key_prefix: str) -> None:
    from engine.service import ActionRegistry, Transition, action

    actions = ActionRegistry()
    action("s", "a", into=actions)(lambda payload: Transition("ok", {}))
    engine = Engine(RedisStore(real_redis, Keys(key_prefix)), MemoryEnqueuer())
    engine.publish(load_definition(_document()), alias="production")
    driver = Driver(engine, actions)
    data = {"x": 1, "text": "a" * 100_000 + "!", "big": list(range(3000))}
    timings = {}
    for name, (expression, status) in RUNTIME_BOMBS.items():
        document = {**json.loads(_document(expression)), "name": f"bomb-{name}"}
        engine.publish(load_definition(json.dumps(document)), alias="production")
        iid = engine.start(document["name"], data)
        healthy = engine.start("hostile", data)
        start = time.perf_counter()
        driver.run_until_idle()
        timings[name] = time.perf_counter() - start
        instance = engine.get(iid)
        assert instance.status is status, (name, instance.status, instance.error)
        if status is InstanceStatus.FAILED:
            assert instance.error["type"] == "ExpressionError" and instance.error["node"] == "a", instance.error
            if "map" in expression:
                assert "comprehension steps" in str(instance.error), instance.error
        assert engine.get(healthy).status is InstanceStatus.SUCCEEDED
    print("\nscenario 9: run-time bombs (each with a healthy neighbour) done in "
          + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items()))


# --------------------------------------------------------------------------- raw messages on a worker's queue


class _Evil:
    """Unpickling this creates the marker file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def live(redis_url: str) -> Iterator[SharedFleet]:
    specs = [FleetSpec("engine", "threads", 2), FleetSpec("faulty", "prefork", 1)]
    with shared_fleet(redis_url, "tests.faults.misbehaving_services", specs, name="hostile") as fleet:
        fleet.engine.publish(load_definition(json.dumps({
            "name": "one-step", "start": "a",
            "nodes": {"a": {"type": "service", "service": "faulty", "action": "work", "transitions": {"ok": "done"},
                            "input": {"key": "data.key", "mode": "'ok'", "node": "'a'"}},
                      "done": {"type": "terminal", "status": "succeeded"}}})), alias="production")
        yield fleet


def _publish_raw(live: SharedFleet, body: bytes, content_type: str) -> str:
    task_id = str(uuid.uuid4())
    app = enqueuer_of(live.engine).app  # type: ignore[attr-defined]
    headers = {"lang": "py", "task": "faulty.work", "id": task_id, "root_id": task_id, "parent_id": None,
               "group": None, "retries": 0, "eta": None, "expires": None, "argsrepr": "", "kwargsrepr": ""}
    queue = Queue("faulty", Exchange("faulty", type="direct"), routing_key="faulty")
    with app.producer_or_acquire() as producer:  # declared: the message waits in the queue for the worker
        producer.publish(body, exchange=queue.exchange, routing_key="faulty", content_type=content_type,
                         content_encoding="binary", headers=headers, serializer=None, declare=[queue])
    return task_id


def test_pickled_and_unknown_content_type_messages_are_refused_and_the_worker_keeps_serving(
        live: SharedFleet, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    payload = {"key": "evil", "mode": "ok", "node": "a", "evil": _Evil(str(marker))}
    messages = {
        "application/x-python-serialize": pickle.dumps(((payload,), {}, {})),
        "application/x-yaml": f"!!python/object/apply:os.system ['touch {marker}']".encode(),
        "application/x-tradeflow-unknown": b"\x00\x01 whatever",
    }
    for content_type, body in messages.items():
        _publish_raw(live, body, content_type)
    refusal = "Refusing to deserialize untrusted content"
    live.wait_until(lambda: live.logs(10**7).count(refusal) >= len(messages), 120, "the worker to refuse them")
    iid = live.engine.start("one-step", {"key": "after"}, run="after-hostile")
    live.wait_run("after-hostile", timeout=120)
    assert live.engine.get(iid).status is InstanceStatus.SUCCEEDED  # the worker kept serving
    assert not marker.exists()  # no pickle was loaded, no YAML tag run
    calls = live.client.hgetall(f"{live.prefix}:calls")
    assert {k.decode() for k in calls} == {"after:a"}  # the action ran for the good message only
    queue_keys = list(live.client.scan_iter(match=f"{live.prefix}:q:faulty*"))
    assert all(live.client.llen(k) == 0 for k in queue_keys if live.client.type(k) == b"list")
    # Refused for good, not parked for redelivery: the unacked hash drains once the good message's
    # late ack lands (the instance can succeed a moment before its message is acknowledged); a
    # refused message parked there would stay until the visibility timeout (hours).
    live.wait_until(lambda: live.client.hlen(f"{live.prefix}:q:unacked") == 0, 120,
                    "the unacked hash to drain (a refused message parked for redelivery would stay)")
    refused = [line for line in live.logs(10**7).splitlines() if refusal in line]
    print(f"\nscenario 9: {len(messages)} raw messages refused ({', '.join(messages)}); marker absent; "
          f"next instance succeeded; the worker logged {len(refused)} refusals, e.g. {refused[0][-110:]!r}")


# --------------------------------------------------------------------------- malformed account data


RUN_DATE = date(2026, 11, 20)  # a Friday: both exchanges trade
AFTER_OPEN = datetime(2026, 11, 20, 15, 0, tzinfo=UTC).timestamp()


def test_malformed_account_data_fails_only_its_account_with_the_reason(real_redis: redis.Redis,
                                                                       key_prefix: str) -> None:
    svc = build_services(PMSettings(prefix=f"{key_prefix}:pm:"), client=real_redis)
    seed_book(svc.book, 24, 11, RUN_DATE, GeneratorConfig(broken_share=0.0))
    engine = Engine(RedisStore(real_redis, Keys(key_prefix)), MemoryEnqueuer(), ManualClock(AFTER_OPEN))
    ensure_definitions(engine, PMSettings().definitions_dir)
    book_keys = svc.book.keys  # type: ignore[attr-defined]
    ids = [a.id for a in svc.book.list_accounts()]
    garbage_cash, garbage_lots, not_json, bad_region = ids[:4]
    real_redis.hset(book_keys.cash, garbage_cash, "lots-of-money")
    real_redis.set(book_keys.lots(garbage_lots), '[{"lot_id": "L1", "symbol": 7, "quantity": "many"')
    real_redis.hset(book_keys.accounts, not_json, "{garbage")
    account = json.loads(real_redis.hget(book_keys.accounts, bad_region))
    real_redis.hset(book_keys.accounts, bad_region, json.dumps({**account, "region": "MARS", "type": "<script>"}))
    with pm_actions.services_in_use(svc):
        started = start_daily_rebalance(engine, svc.book, RUN_DATE, run="hostile-book")
        Driver(engine).run_until_idle()
    assert set(started.invalid_accounts) == {not_json, bad_region}
    assert "invalid" in started.invalid_accounts[not_json] and "region" in started.invalid_accounts[bad_region]
    assert started.total == len(ids) - 2  # every other account started
    instances = {i.data["account_id"]: i for i in engine.list("hostile-book")}
    for account_id in (garbage_cash, garbage_lots):
        instance = instances[account_id]
        assert instance.status is InstanceStatus.FAILED and instance.node == "fetch_holdings", instance.error
        assert account_id in failure_reason(instance) and "invalid" in failure_reason(instance)
        assert instance.error["attempt"] == 1  # bad data is not retried
    others = [i for a, i in instances.items() if a not in (garbage_cash, garbage_lots)]
    healthy = (InstanceStatus.SUCCEEDED, InstanceStatus.AWAITING)  # nothing to do, or a proposal awaiting review
    assert others and all(i.status in healthy and i.error is None for i in others), \
        [(i.id, i.status, i.error) for i in others if i.status not in healthy]
    assert all(i.node == "review" for i in others if i.status is InstanceStatus.AWAITING)
    assert instance_id_for("hostile-book", not_json) not in {i.id for i in instances.values()}
    print(f"\nscenario 9: book of {len(ids)} accounts, 4 corrupted: {len(others)} planned (ended or awaiting "
          f"review), 2 failed at fetch_holdings with the reason, 2 unreadable records named in invalid_accounts")
