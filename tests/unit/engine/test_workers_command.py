"""``tradeflow workers --processes N --fillers M``: how many combined solo processes start, and at which
priority, on the real test Redis; refused beside ``--fleet`` before anything starts. A fleet's niceness
is the one its processes run at."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

import engine.cli as cli
from engine.ops.fleet import FILLER_NICE, Fleet, FleetSpec, all_queues


class RecordedFleet:
    """Stands in for :class:`engine.ops.fleet.Fleet`: records what would start, starts nothing."""

    started: list[list[FleetSpec]] = []

    def __init__(self, specs: list[FleetSpec], **_options: Any) -> None:
        RecordedFleet.started.append(specs)

    def __enter__(self) -> RecordedFleet:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def wait(self) -> None:
        return None


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str, key_prefix: str,
             real_redis: redis.Redis) -> list[list[FleetSpec]]:
    """The command on the real test Redis under a prefix of its own, its fleets recorded, not started."""
    monkeypatch.setattr(cli, "Fleet", RecordedFleet)
    monkeypatch.setenv("TRADEFLOW_REDIS_URL", redis_url)
    monkeypatch.setenv("TRADEFLOW_KEY_PREFIX", key_prefix)
    monkeypatch.setenv("TRADEFLOW_HOME", str(tmp_path))
    RecordedFleet.started = []
    return RecordedFleet.started


def _layout(specs: list[FleetSpec]) -> list[tuple[list[str], str, int, int]]:
    return [(s.queues, s.pool, s.concurrency, s.nice) for s in specs]


def test_processes_starts_that_many_combined_solo_processes_and_one_filler_per_two(
        recorded: list[list[FleetSpec]]) -> None:
    result = CliRunner().invoke(cli.main, ["workers", "--processes", "5", "--no-beat"])
    assert result.exit_code == 0, result.output
    [specs] = recorded
    assert _layout(specs) == [(all_queues(), "solo", 1, 0)] * 5 + [(all_queues(), "solo", 1, FILLER_NICE)] * 2
    assert "nice 10" in result.output  # the started line says which ones run at a lower priority


def test_fillers_sets_how_many_low_priority_processes_start(recorded: list[list[FleetSpec]]) -> None:
    for fillers, expected in (("0", 0), ("3", 3)):
        result = CliRunner().invoke(cli.main, ["workers", "--processes", "2", "--fillers", fillers, "--no-beat"])
        assert result.exit_code == 0, result.output
        assert _layout(recorded[-1]) == ([(all_queues(), "solo", 1, 0)] * 2
                                         + [(all_queues(), "solo", 1, FILLER_NICE)] * expected)


def test_no_option_starts_one_process_per_core_and_one_filler(recorded: list[list[FleetSpec]],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    result = CliRunner().invoke(cli.main, ["workers", "--no-beat"])
    assert result.exit_code == 0, result.output
    assert [s.nice for s in recorded[-1]] == [0, 0, FILLER_NICE]


def test_a_fleet_spec_carries_its_niceness() -> None:
    assert FleetSpec.parse("engine:solo:1:10") == FleetSpec("engine", "solo", 1, 10)
    assert FleetSpec.parse("order_calc:prefork:2").nice == 0
    assert str(FleetSpec("engine", "solo", 1, 10)) == "engine (solo x1, nice 10)"
    for wrong in ("engine:solo:1:-5", "engine:solo:1:20"):
        with pytest.raises(ValueError, match="NICE must be 0"):
            FleetSpec.parse(wrong)


def test_a_wrong_fleet_is_refused_with_the_format_before_anything_starts(recorded: list[list[FleetSpec]]) -> None:
    result = CliRunner().invoke(cli.main, ["workers", "--fleet", "engine:solo:1:-5"])
    assert result.exit_code == 2 and "QUEUE[:POOL[:CONCURRENCY[:NICE]]]" in result.output
    assert recorded == []


def test_a_fleet_process_runs_at_its_niceness(tmp_path: Path) -> None:
    fleet = Fleet([], beat=False, logdir=tmp_path)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        fleet._spawn([sys.executable, "-c", "import time; time.sleep(30)"], "plain")
        fleet._spawn([sys.executable, "-c", "import time; time.sleep(30)"], "filler", 7)
        plain, filler = fleet.procs
        assert os.getpriority(os.PRIO_PROCESS, plain.pid) == base
        assert os.getpriority(os.PRIO_PROCESS, filler.pid) == min(19, base + 7)
    finally:
        fleet.stop(timeout=5)


def test_processes_beside_a_fleet_is_refused_before_anything_starts(recorded: list[list[FleetSpec]]) -> None:
    result = CliRunner().invoke(cli.main, ["workers", "--processes", "3", "--fleet", "order_calc:prefork:2"])
    assert result.exit_code == 2 and "with --fleet, repeat a fleet" in result.output
    result = CliRunner().invoke(cli.main, ["workers", "--fillers", "1", "--fleet", "order_calc:prefork:2"])
    assert result.exit_code == 2 and "with --fleet, repeat a fleet" in result.output
    assert recorded == []
    assert CliRunner().invoke(cli.main, ["workers", "--processes", "0"]).exit_code == 2  # at least one
