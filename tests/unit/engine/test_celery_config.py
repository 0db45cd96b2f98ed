"""Celery's configuration comes from Settings (every TRADEFLOW_* variable read once) and the plugins."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.celery_config import celery_config
from engine.config import Settings
from engine.runtime.runner import DEFAULT_INLINE_STEPS
from portfolio_manager.errors import SettingsError

URL = "redis://127.0.0.1:6379/5"


def test_the_settings_shape_celerys_configuration() -> None:
    settings = Settings.from_env({
        "TRADEFLOW_PREFETCH": "4", "TRADEFLOW_VISIBILITY_TIMEOUT": "600", "TRADEFLOW_UNACKED_RESTORE_SECONDS": "5",
        "TRADEFLOW_BROKER_PREFIX": "t1:", "TRADEFLOW_EVENTS": "0", "TRADEFLOW_SERVICE_MODULES": "a.b, c.d",
        "TRADEFLOW_TIMER_INTERVAL": "2", "TRADEFLOW_BROKER_URL": "redis://127.0.0.1:6379/6"})
    conf = celery_config(settings, URL)
    assert conf["tradeflow_redis_url"] == URL and conf["broker_url"] == "redis://127.0.0.1:6379/6"
    assert conf["worker_prefetch_multiplier"] == 4 and conf["worker_send_task_events"] is False
    assert conf["broker_transport_options"] == {"visibility_timeout": 600, "priority_steps": [0, 3, 6, 9],
                                                "unacked_restore_interval": 5, "unacked_restore_throttle": 1,
                                                "global_keyprefix": "t1:"}
    assert conf["tradeflow_service_modules"] == ["a.b", "c.d"]
    assert conf["beat_schedule"]["engine-timers"]["schedule"] == 2.0
    assert conf["accept_content"] == ["json"]


def test_defaults_come_from_the_settings_and_the_installed_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEFLOW_MORNING_AT", "09:30")
    monkeypatch.delenv("TRADEFLOW_MORNING_RUN", raising=False)
    conf = celery_config(Settings.from_env({}), URL)
    assert conf["broker_url"] == URL and conf["worker_prefetch_multiplier"] == 1
    assert conf["tradeflow_service_modules"] == ["portfolio_manager.worker", "order_calc.actions"]
    morning = {name for name in conf["beat_schedule"] if not name.startswith("engine-")}
    assert morning and all("schedule" in conf["beat_schedule"][name] for name in morning)
    monkeypatch.setenv("TRADEFLOW_MORNING_RUN", "0")
    assert set(celery_config(Settings.from_env({}), URL)["beat_schedule"]) == {"engine-timers", "engine-sweeper"}


def test_a_bad_morning_time_is_refused_where_the_schedule_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEFLOW_MORNING_AT", "9h")
    with pytest.raises(SettingsError, match="TRADEFLOW_MORNING_AT"):
        celery_config(Settings.from_env({}), URL)


def test_the_inline_default_is_written_once() -> None:
    assert Settings.from_env({}).inline_steps == Settings.inline_steps == DEFAULT_INLINE_STEPS
    assert Settings.from_env({"TRADEFLOW_INLINE_STEPS": "0"}).inline_steps == 0


def test_beats_schedule_lives_under_tradeflow_home(tmp_path: Path) -> None:
    conf = celery_config(Settings.from_env({"TRADEFLOW_HOME": str(tmp_path)}), URL)
    assert conf["beat_schedule_filename"] == str(tmp_path / "celerybeat-schedule")


def test_the_expected_data_set_is_read_once_and_handed_to_worker_processes() -> None:
    settings = Settings.from_env({"TRADEFLOW_EXPECT_EPOCH": "e1"})
    assert settings.expected_epoch == "e1" and not settings.redis_url_configured
    pinned = Settings.from_env({}).with_redis(URL).pinned_to("e2")
    assert pinned.redis_url_configured
    assert pinned.child_env() == {"TRADEFLOW_REDIS_URL": URL, "TRADEFLOW_EXPECT_EPOCH": "e2"}
    assert Settings.from_env(pinned.child_env()).expected_epoch == "e2"


def test_task_events_are_off_unless_asked_for() -> None:
    off = celery_config(Settings.from_env({}), URL)
    assert off["worker_send_task_events"] is False and off["task_send_sent_event"] is False
    on = celery_config(Settings.from_env({"TRADEFLOW_EVENTS": "1"}), URL)
    assert on["worker_send_task_events"] is True and on["task_send_sent_event"] is True
