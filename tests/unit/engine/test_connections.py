"""Redis URLs: one server or Sentinel, for the state client and Celery's broker, from the settings."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from redis.sentinel import SentinelConnectionPool

from engine.config import Settings
from engine.connections import (
    SentinelAddress,
    broker_config,
    broker_for,
    client_for,
    kombu_url,
    masked_url,
    parse_sentinel_url,
    replica_wait,
    state_url,
)
from engine.errors import ConfigurationError


@pytest.mark.parametrize(
    "url",
    [
        "sentinel://:s3cret@h1:26379,h2:26380,h3/2",
        "sentinel://:s3cret@h1:26379/2;sentinel://h2:26380;sentinel://h3",
    ],
    ids=["comma form", "kombu form"],
)
def test_both_sentinel_url_forms_parse_alike(url: str) -> None:
    assert parse_sentinel_url(url) == SentinelAddress((("h1", 26379), ("h2", 26380), ("h3", 26379)), 2, None,
                                                      "s3cret")


def test_the_broker_gets_kombus_form_and_the_master_name() -> None:
    url, options = broker_config("sentinel://u:pw@h1:26379,h2:26379/0", sentinel_master="tf",
                                 sentinel_password="sentinel-pw")
    assert url == "sentinel://u:pw@h1:26379/0;sentinel://u:pw@h2:26379/0"
    assert options == {"master_name": "tf", "sentinel_kwargs": {"password": "sentinel-pw"}}
    assert broker_config("redis://h:6379/0") == ("redis://h:6379/0", {})


def test_a_unix_socket_url_reaches_kombu_in_its_own_spelling_with_the_database() -> None:
    """kombu has no ``unix`` transport: the broker gets ``redis+socket://`` and the db as its virtual host."""
    assert kombu_url("unix:///run/redis/redis.sock?db=3") == "redis+socket:///run/redis/redis.sock?virtual_host=3"
    assert kombu_url("unix://tf:pw@/run/redis.sock?db=1") == "redis+socket://tf:pw@/run/redis.sock?virtual_host=1"
    assert kombu_url("unix:///run/redis.sock?password=p%40w&db=1") == \
        "redis+socket://:p%40w@/run/redis.sock?virtual_host=1"  # kombu reads a password in the netloc only
    assert kombu_url("unix:///run/redis.sock") == "redis+socket:///run/redis.sock"
    assert broker_config("unix:///run/redis.sock?db=2") == ("redis+socket:///run/redis.sock?virtual_host=2", {})
    for url in ("redis://h:6379/0", "rediss://:pw@h:6380/1", "redis+socket:///run/redis.sock"):
        assert kombu_url(url) == url


def test_settings_read_the_sentinel_options_once_and_build_both_sides() -> None:
    env = {"TRADEFLOW_REDIS_URL": "sentinel://h1:26379,h2:26379/3", "TRADEFLOW_REDIS_SENTINEL_MASTER": "tf",
           "TRADEFLOW_REDIS_SENTINEL_PASSWORD": "spw", "TRADEFLOW_REDIS_WAIT_REPLICAS": "1",
           "TRADEFLOW_REDIS_WAIT_MS": "50"}
    settings = Settings.from_env(env)
    assert settings.uses_sentinel and "spw" not in repr(settings)
    client = client_for(settings)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "tf"
    assert pool.connection_kwargs["db"] == 3
    assert [(c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
            for c in pool.sentinel_manager.sentinels] == [("h1", 26379), ("h2", 26379)]
    assert pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs["password"] == "spw"
    assert broker_for(settings)[1]["master_name"] == "tf"
    wait = replica_wait(settings)
    assert wait is not None and (wait.replicas, wait.timeout_ms) == (1, 50)
    assert replica_wait(Settings()) is None


def test_a_sentinel_url_without_a_master_name_says_what_to_set() -> None:
    with pytest.raises(ConfigurationError, match="TRADEFLOW_REDIS_SENTINEL_MASTER"):
        Settings.from_env({"TRADEFLOW_REDIS_URL": "sentinel://h1:26379/0"})
    with pytest.raises(ConfigurationError, match="sentinel://h1:26379,h2:26379,h3:26379/0"):
        parse_sentinel_url("sentinel://h1:notaport/0")


def test_passwords_never_reach_a_log_line() -> None:
    assert masked_url("sentinel://u:pw@h1:26379/0;sentinel://u:pw@h2:26379/0") == \
        "sentinel://u:***@h1:26379/0;sentinel://u:***@h2:26379/0"
    assert masked_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert masked_url("unix:///run/redis.sock?db=0&password=pw") == "unix:///run/redis.sock?db=0&password=***"
    assert masked_url("redis://h:6379/0?password=pw&ssl_cert_reqs=none") == \
        "redis://h:6379/0?password=***&ssl_cert_reqs=none"


def test_a_configured_redis_that_does_not_answer_is_named_without_its_password() -> None:
    from engine.errors import RedisUnavailable
    from engine.ops.embedded import wait_for_configured

    for url, shown in (("redis://tf:s3cret@127.0.0.1:1/0", "redis://tf:***@127.0.0.1:1/0"),
                       ("unix:///nonexistent/redis.sock?db=0&password=s3cret",
                        "unix:///nonexistent/redis.sock?db=0&password=***")):
        with pytest.raises(RedisUnavailable) as raised:
            wait_for_configured(url, attempts=1, sleep=lambda _seconds: None)
        assert shown in str(raised.value) and "s3cret" not in str(raised.value)


def test_a_sentinel_url_is_the_state_url_as_it_is_never_asked_nor_replaced(tmp_path: Path) -> None:
    """No sentinel answers here: a one-server URL would be retried and reported; Sentinel's is handed on."""
    url = "sentinel://127.0.0.1:1,127.0.0.1:2/0"
    settings = Settings.from_env({"TRADEFLOW_REDIS_URL": url, "TRADEFLOW_REDIS_SENTINEL_MASTER": "m",
                                  "TRADEFLOW_HOME": str(tmp_path)})
    assert settings.redis_url_configured
    assert state_url(settings) == url
    assert state_url(settings, allow_start=True) == url
    assert not (tmp_path / "embedded.json").exists()


def test_a_configured_redis_that_does_not_answer_is_asked_as_often_as_the_settings_say(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.errors import RedisUnavailable
    from engine.ops import embedded

    asked: list[str] = []
    waits: list[float] = []
    monkeypatch.setattr(embedded, "redis_answers", lambda url: asked.append(url) or False)
    monkeypatch.setattr(embedded, "time", SimpleNamespace(sleep=waits.append))
    assert (Settings().redis_connect_attempts, Settings().redis_connect_wait) == (4, 0.25)  # the defaults
    quick = Settings.from_env({"TRADEFLOW_REDIS_URL": "redis://127.0.0.1:1/0", "TRADEFLOW_REDIS_CONNECT_ATTEMPTS": "3",
                               "TRADEFLOW_REDIS_CONNECT_WAIT": "0.1"})
    with pytest.raises(RedisUnavailable, match=r"does not answer \(3 attempts\)"):
        state_url(quick)
    assert asked == ["redis://127.0.0.1:1/0"] * 3 and waits == [0.1, 0.2]
    asked.clear()
    waits.clear()
    with pytest.raises(RedisUnavailable, match=r"\(4 attempts\)"):
        state_url(Settings.from_env({"TRADEFLOW_REDIS_URL": "redis://127.0.0.1:1/0"}))
    assert len(asked) == 4 and waits == [0.25, 0.5, 1.0]
    with pytest.raises(ConfigurationError, match="TRADEFLOW_REDIS_CONNECT_ATTEMPTS must be 1 or more"):
        Settings.from_env({"TRADEFLOW_REDIS_CONNECT_ATTEMPTS": "0"})
