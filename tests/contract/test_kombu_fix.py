"""The kombu work-around (``engine.broker.kombu_fix``): a channel whose transport was detached still
builds a pool -- and, in a fresh interpreter without it, the crash it prevents still happens."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection

from engine.broker import kombu_fix

#: What kombu's collect() does before the second close(), on a channel that never reached a server.
_DETACHED = """
import redis
from kombu import Connection
redis.Redis.ping = lambda self, **kwargs: True
{install}
connection = Connection({url!r}, transport_options={options!r})
channel = connection.channel()
connection.transport.client = None
try:
    {call}
except AttributeError as exc:
    print("AttributeError:", exc)
else:
    print("built")
"""


def _detached(url: str, call: str, install: bool, options: dict | None = None) -> str:
    patch = "from engine.broker import kombu_fix; assert kombu_fix.install()" if install else ""
    code = _DETACHED.format(url=url, call=call, options=options or {}, install=patch)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def no_ping(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Channels open without a server: kombu pings on creation, pools connect lazily."""
    monkeypatch.setattr(redis.Redis, "ping", lambda self, **kwargs: True)
    yield


@pytest.mark.parametrize(("url", "call", "options", "crash"), [
    ("redis://127.0.0.1:6390/3", "channel._connparams()", None, "'NoneType' object has no attribute 'hostname'"),
    ("sentinel://127.0.0.1:26390;sentinel://127.0.0.1:26391", "channel._get_pool()", {"master_name": "tfmaster"},
     "'NoneType' object has no attribute"),  # 'hostname' first, then 'alt' (the sentinels' addresses)
])
def test_the_crash_the_work_around_prevents(url: str, call: str, options: dict | None, crash: str) -> None:
    unpatched = _detached(url, call, install=False, options=options)
    assert unpatched.startswith(f"AttributeError: {crash}"), (
        f"kombu no longer crashes on a detached transport ({unpatched!r}): remove engine/broker/kombu_fix.py")
    assert _detached(url, call, install=True, options=options) == "built"


def test_a_detached_redis_channel_builds_its_pool_from_what_it_was_created_with(no_ping: None) -> None:
    assert kombu_fix.install()
    connection = Connection("redis://127.0.0.1:6390/3")
    channel = connection.channel()
    connection.transport.client = None  # what kombu's collect() does before the second close()
    params = channel._connparams()
    assert (params["host"], params["port"], params["db"]) == ("127.0.0.1", 6390, 3)


def test_a_detached_sentinel_channel_builds_its_pool_from_what_it_was_created_with(no_ping: None) -> None:
    assert kombu_fix.install()
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
