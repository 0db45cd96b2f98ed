"""The kombu work-around (``engine.broker_fix``): a channel whose transport was detached still builds a pool."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from kombu import Connection

from engine import broker_fix


@pytest.fixture
def no_ping(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Channels open without a server: kombu pings on creation, pools connect lazily."""
    monkeypatch.setattr(redis.Redis, "ping", lambda self, **kwargs: True)
    yield


def test_a_detached_redis_channel_builds_its_pool_from_what_it_was_created_with(no_ping: None) -> None:
    assert broker_fix.install()
    connection = Connection("redis://127.0.0.1:6390/3")
    channel = connection.channel()
    connection.transport.client = None  # what kombu's collect() does before the second close()
    params = channel._connparams()
    assert (params["host"], params["port"], params["db"]) == ("127.0.0.1", 6390, 3)


def test_a_detached_sentinel_channel_builds_its_pool_from_what_it_was_created_with(no_ping: None) -> None:
    assert broker_fix.install()
    connection = Connection("sentinel://127.0.0.1:26390;sentinel://127.0.0.1:26391",
                            transport_options={"master_name": "tfmaster"})
    channel = connection.channel()
    connection.transport.client = None
    pool = channel._get_pool()  # unpatched: AttributeError: 'NoneType' object has no attribute 'alt'
    sentinels = [(c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
                 for c in pool.sentinel_manager.sentinels]
    assert sentinels == [("127.0.0.1", 26390), ("127.0.0.1", 26391)]
    assert pool.service_name == "tfmaster"
    assert connection.transport.client is None  # detached again once the pool is built
