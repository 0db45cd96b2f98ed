"""Fix (b): a worker warns at start when its Redis has no persistence or may evict keys.

Checked against real redis-servers configured each way; and a real worker's log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.ops.fleet import FleetSpec
from engine.ops.health import redis_warnings
from tests.faults.harness import fault_lab
from tests.faults.redis_server import RedisServer


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    servers: list[RedisServer] = []

    def make(name: str, **options: object) -> redis.Redis:
        server = RedisServer(tmp_path / name, **options).start()  # type: ignore[arg-type]
        servers.append(server)
        return redis.Redis.from_url(server.url)

    yield make
    for server in servers:
        server.close()


def test_aof_and_noeviction_raise_no_warning(server_factory) -> None:
    assert redis_warnings(server_factory("good")) == []


def test_no_persistence_and_an_eviction_policy_are_both_reported(server_factory) -> None:
    client = server_factory("bad", appendonly=False, extra=("--maxmemory-policy", "allkeys-lru"))
    found = redis_warnings(client)
    assert len(found) == 2
    assert found[0].startswith("Redis has no persistence") and "appendonly yes" in found[0]
    assert "'allkeys-lru'" in found[1] and "maxmemory-policy noeviction" in found[1]


def test_rdb_snapshots_only_are_reported_as_such(server_factory) -> None:
    [found] = redis_warnings(server_factory("rdb", appendonly=False, extra=("--save", "900", "1")))
    assert found.startswith("Redis persists only RDB snapshots") and "'900 1'" in found


def test_config_get_forbidden_says_it_could_not_check(server_factory) -> None:
    admin = server_factory("acl", appendonly=False)
    admin.acl_setuser("app", enabled=True, passwords=["+secret"], keys=["*"], commands=["+@all", "-config"])
    port = admin.connection_pool.connection_kwargs["port"]
    limited = redis.Redis(port=port, username="app", password="secret")
    [found] = redis_warnings(limited)
    assert found.startswith("could not check Redis persistence") and "CONFIG GET refused" in found


def test_a_worker_logs_the_warning_when_it_starts(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, appendonly=False)
    with fault_lab(tmp_path, {"engine": FleetSpec("engine", "threads", 1)}, beat=False, redis_server=server) as lab:
        lab.wait_until(lambda: "Redis has no persistence" in lab.log_text(), 60, "the worker's warning")
        [line] = [x for x in lab.log_text().splitlines() if "Redis has no persistence" in x]
        assert "WARNING" in line and f"127.0.0.1:{server.port}" in line
