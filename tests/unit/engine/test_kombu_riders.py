"""The pure parts of kombu_riders: which messages ride, which pools, the setting, settling a delivery."""

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


@pytest.fixture(autouse=True)
def _clean() -> Any:
    yield
    kombu_riders._deliveries.clear()


def test_a_delivery_whose_start_was_its_bookkeeping_is_settled_once_and_drops_its_kept_start() -> None:
    forgotten: list[str] = []
    message = SimpleNamespace(delivery_tag="tag-1")
    kombu_riders._deliveries["tag-1"] = (lambda: forgotten.append("tag-1"), message)
    assert kombu_riders._settled("tag-1") is message  # nothing of it in Redis: kombu's ack skips Redis
    assert forgotten == ["tag-1"] and not kombu_riders._deliveries
    assert kombu_riders._settled("tag-1") is None  # settled once; any other tag is kombu's own
    assert forgotten == ["tag-1"]
