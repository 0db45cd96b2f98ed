"""Fleets on the same queues (one solo process per core) each get a node name and a log of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.ops import fleet as fleet_module
from engine.ops.fleet import Fleet, FleetSpec


def _node(cmd: list[str]) -> str:
    return cmd[cmd.index("-n") + 1]


def test_the_second_fleet_on_the_same_queues_has_a_node_name_of_its_own() -> None:
    spec = FleetSpec.parse("engine,portfolio_manager,order_calc:solo:1")
    assert (spec.pool, spec.concurrency) == ("solo", 1)
    assert _node(spec.command()) == "engine+portfolio_manager+order_calc@%h"
    assert _node(spec.command(number=2)) == "engine+portfolio_manager+order_calc-2@%h"


def test_a_fleet_started_twice_on_the_same_queues_runs_two_named_workers(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[str, list[str]]] = []

    def record(self: Fleet, cmd: list[str], name: str, nice: int = 0) -> None:
        started.append((name, cmd))

    monkeypatch.setattr(fleet_module.Fleet, "_spawn", record)
    specs = [FleetSpec.parse("a,b:solo:1"), FleetSpec.parse("a,b:solo:1"), FleetSpec.parse("c")]
    Fleet(specs, beat=False, logdir=tmp_path).__enter__()
    assert [name for name, _ in started] == ["worker-a,b", "worker-a,b-2", "worker-c"]
    assert [_node(cmd) for _, cmd in started] == ["a+b@%h", "a+b-2@%h", "c@%h"]
