"""The offset-file clock that rehearsals and fault tests give to worker processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import engine.clock
from engine.clock import OffsetFileClock, make_clock, system_clock
from engine.config import Settings
from engine.errors import ConfigurationError


def test_the_offset_in_the_file_is_added_to_the_wall_clock(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    path.write_text("259200\n")
    clock = OffsetFileClock(path)
    assert clock() - time.time() == pytest.approx(259200, abs=1)


def test_a_rewritten_file_is_seen_after_the_refresh_period(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]  # the monotonic clock, moved by the test: a busy machine cannot skip the cached read
    monkeypatch.setattr(engine.clock.time, "monotonic", lambda: now[0])
    path = tmp_path / "offset"
    path.write_text("100")
    clock = OffsetFileClock(path, refresh=0.2)
    assert clock.offset() == 100
    path.write_text("5000")
    now[0] += 0.19
    assert clock.offset() == 100  # cached: read at most once per refresh period
    now[0] += 0.01
    assert clock.offset() == 5000


def test_a_missing_or_empty_file_means_no_offset(tmp_path: Path) -> None:
    assert OffsetFileClock(tmp_path / "absent").offset() == 0
    (tmp_path / "empty").write_text("  \n")
    assert OffsetFileClock(tmp_path / "empty").offset() == 0


def test_garbage_in_the_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    path.write_text("three days")
    with pytest.raises(ConfigurationError, match="clock offset must be a number of seconds"):
        OffsetFileClock(path)()


def test_settings_choose_the_clock(tmp_path: Path) -> None:
    assert make_clock(Settings.from_env({}).clock_offset_file) is system_clock
    settings = Settings.from_env({"TRADEFLOW_CLOCK_OFFSET_FILE": str(tmp_path / "offset")})
    clock = make_clock(settings.clock_offset_file)
    assert isinstance(clock, OffsetFileClock) and clock.path == tmp_path / "offset"
