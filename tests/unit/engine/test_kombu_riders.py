"""The pure parts of kombu_riders: which messages ride, which pools, the setting, the ack's bookkeeping."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from engine.app import delivery_starts
from engine.broker import MemoryEnqueuer, kombu_riders
from engine.config import Settings


def _message(task: str | None = "svc.work", args: Any = ("i1", "a", 2, 1), **headers: Any) -> Any:
    return SimpleNamespace(headers={"task": task, "id": "t1", **headers}, body=json.dumps([list(args), {}, {}]))


def test_a_step_message_is_read_from_its_headers_and_body() -> None:
    assert kombu_riders.step_of_message(_message()) == ("svc.work", ["i1", "a", 2, 1])
    assert kombu_riders.step_of_message(_message(eta="2026-01-01T00:00:00")) is None  # not to run at once
    assert kombu_riders.step_of_message(_message(countdown=3)) is None
    assert kombu_riders.step_of_message(_message(task=None)) is None
    assert kombu_riders.step_of_message(SimpleNamespace(headers={"task": "x"}, body=b"not json")) is None
    assert kombu_riders.step_of_message(SimpleNamespace(headers={"task": "x"}, body=b'{"a": 1}')) is None


def test_only_pools_running_tasks_in_the_consuming_process_ride() -> None:
    assert kombu_riders.rides_in("solo") and not kombu_riders.rides_in("threads")
    assert not kombu_riders.rides_in("prefork") and not kombu_riders.rides_in(None)


def test_the_setting_is_on_unless_turned_off() -> None:
    assert Settings.from_env({}).broker_riders
    assert not Settings.from_env({"TRADEFLOW_BROKER_RIDERS": "0"}).broker_riders
    assert Settings.from_env({"TRADEFLOW_BROKER_RIDERS": "1"}).broker_riders


def test_only_the_engines_step_tasks_with_the_broker_on_the_states_redis_get_a_start() -> None:
    runtime = SimpleNamespace(enqueuer=MemoryEnqueuer())
    starts = delivery_starts(lambda: runtime, frozenset({"svc.work"}))  # type: ignore[arg-type, return-value]
    assert starts("svc.other", ["i1", "a", 2, 1]) is None  # not a step task of this worker
    assert starts("svc.work", ["i1", "a"]) is None  # not a step's arguments
    assert starts("svc.work", ["i1", "a", 2, 1]) is None  # the broker is not the state's Redis


def _delivery(tag: str, task_id: str, forgotten: list[str]) -> None:
    kombu_riders._deliveries[tag] = ([("ZREM", "q:unacked_index", tag), ("HDEL", "q:unacked", tag)],
                                     lambda: forgotten.append(tag), task_id)
    kombu_riders._tags.setdefault(task_id, []).append(tag)


@pytest.fixture(autouse=True)
def _clean() -> Any:
    yield
    kombu_riders._deliveries.clear()
    kombu_riders._tags.clear()
    kombu_riders._acked.clear()


def test_an_ack_counts_as_sent_only_when_every_command_of_it_landed() -> None:
    forgotten: list[str] = []
    _delivery("tag-1", "task-1", forgotten)
    riders = kombu_riders.ack_riders("tag-1")
    assert [r.command() for r in riders] == [("ZREM", "q:unacked_index", "tag-1"), ("HDEL", "q:unacked", "tag-1")]
    riders[0].landed(1)
    riders[1].landed(ConnectionError("gone"))
    assert kombu_riders._settled("tag-1") is False  # kombu acks it itself
    assert forgotten == ["tag-1"] and not kombu_riders._tags and not kombu_riders._deliveries

    _delivery("tag-2", "task-2", forgotten)
    for rider in kombu_riders.ack_riders("tag-2"):
        rider.landed(1)
    assert kombu_riders._settled("tag-2") is True and not kombu_riders._acked


def test_a_task_finds_its_delivery_by_its_id_unless_that_id_was_delivered_twice_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import celery

    forgotten: list[str] = []
    assert kombu_riders.current_delivery_tag() is None  # outside a task
    monkeypatch.setattr(celery, "current_task", SimpleNamespace(request=SimpleNamespace(id="task-x")))
    _delivery("tag-a", "task-x", forgotten)
    assert kombu_riders.current_delivery_tag() == "tag-a" and len(kombu_riders.ack_riders()) == 2
    _delivery("tag-b", "task-x", forgotten)
    assert kombu_riders.current_delivery_tag() is None and kombu_riders.ack_riders() == []
    kombu_riders._settled("tag-a")
    assert kombu_riders._tags["task-x"] == ["tag-b"] and kombu_riders.current_delivery_tag() == "tag-b"
    kombu_riders._settled("tag-b")
    assert not kombu_riders._tags and forgotten == ["tag-a", "tag-b"]
