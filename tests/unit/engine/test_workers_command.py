"""``tradeflow workers --processes N``: how many combined solo processes start, on the real test Redis;
refused beside ``--fleet`` before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

import engine.cli as cli
from engine.ops.fleet import FleetSpec, all_queues


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


def test_processes_starts_that_many_combined_solo_processes(recorded: list[list[FleetSpec]]) -> None:
    result = CliRunner().invoke(cli.main, ["workers", "--processes", "3", "--no-beat"])
    assert result.exit_code == 0, result.output
    [specs] = recorded
    assert [(s.queues, s.pool, s.concurrency) for s in specs] == [(all_queues(), "solo", 1)] * 3


def test_processes_beside_a_fleet_is_refused_before_anything_starts(recorded: list[list[FleetSpec]]) -> None:
    result = CliRunner().invoke(cli.main, ["workers", "--processes", "3", "--fleet", "order_calc:prefork:2"])
    assert result.exit_code == 2 and "with --fleet, repeat a fleet" in result.output
    assert recorded == []
    assert CliRunner().invoke(cli.main, ["workers", "--processes", "0"]).exit_code == 2  # at least one
