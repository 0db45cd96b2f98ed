"""bench.replay_instructions counts what a redis-server under valgrind executes for a piece of work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.replay_instructions import CountedRedis
from bench.replay_state import Call, send

TOOLS = ("valgrind", "callgrind_control", "redis-server")


@pytest.mark.skipif(not all(shutil.which(tool) for tool in TOOLS), reason="needs valgrind and redis-server")
def test_the_count_grows_with_the_work_and_the_replay_moves_the_calls_to_its_own_prefix(tmp_path: Path) -> None:
    server = CountedRedis("redis-server", tmp_path)
    try:
        sha = server.client.script_load("return redis.call('SET', KEYS[1], ARGV[1])")
        calls = [Call("set", [b"cap:{i%d}" % i], [b"v"]) for i in range(300)]
        few = server.count(lambda: send(server.client, calls[:30], sha, b"cap", b"one"))
        many = server.count(lambda: send(server.client, calls, sha, b"cap", b"two"))
        assert 0 < few < many
        assert server.client.get(b"two:{i299}") == b"v" and server.client.get(b"cap:{i0}") is None
        assert server.count(lambda: None) < few  # zeroed before each count
    finally:
        server.stop()
    assert server.process.returncode is not None
