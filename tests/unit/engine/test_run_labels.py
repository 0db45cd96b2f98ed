"""Run labels are checked where runs are created: the engine's start and start_many, and
``tradeflow pm run --run`` (one function, :func:`engine.labels.check_run_label`)."""

from __future__ import annotations

import json

import fakeredis
import pytest
from click.testing import CliRunner

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.definitions.validation import load_definition
from engine.errors import InvalidInput
from engine.labels import check_run_label
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore

PARK = {"name": "park", "initial_data": {"type": "object"}, "start": "hold",
        "nodes": {"hold": {"type": "await", "signals": {"go": "done"}},
                  "done": {"type": "terminal", "status": "succeeded"}}}

GOOD = ["adhoc", "rebalance-2026-11-27", "submit-rebalance-2026-11-27", "deposits-2026-11-27",
        "adhoc-rebalance-2026-11-27", "desk_a.test:1", "x" * 128, "A"]
BAD = ["", "ops/desk?x=1#frag", "a b", "-starts-with-dash", ".hidden", "x" * 129, "café", "run%20", "a\nb"]


@pytest.mark.parametrize("label", GOOD)
def test_the_platforms_labels_are_valid(label: str) -> None:
    assert check_run_label(label) == label


@pytest.mark.parametrize("label", BAD)
def test_a_bad_label_is_refused_naming_the_allowed_characters(label: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_run_label(label)
    assert "letters A-Z a-z, digits 0-9 and '-', '_', '.', ':'" in str(refused.value)
    assert repr(label) in str(refused.value)


def test_start_and_start_many_refuse_a_bad_label_and_create_nothing() -> None:
    client = fakeredis.FakeRedis()
    engine = Engine(RedisStore(client, Keys("lbl")), MemoryEnqueuer())
    engine.publish(load_definition(json.dumps(PARK)))
    for start in (lambda: engine.start("park", {}, run="ops/desk?x=1#frag"),
                  lambda: engine.start_many("park", [{}, {}], run="ops/desk?x=1#frag")):
        with pytest.raises(InvalidInput, match="allowed"):
            start()
    assert engine.runs() == []
    engine.start_many("park", [{}], run="rebalance-2026-11-27")
    assert engine.runs() == ["rebalance-2026-11-27"]


def test_pm_run_refuses_a_bad_label_before_connecting() -> None:
    from portfolio_manager.cli import pm

    answer = CliRunner().invoke(pm, ["run", "--run", "ops/desk?x=1#frag", "--no-watch"])
    assert answer.exit_code == 2
    assert "ops/desk?x=1#frag" in answer.output and "letters A-Z a-z, digits 0-9" in answer.output
