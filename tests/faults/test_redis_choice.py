"""Redis is never switched silently (issue 14, item 3), through the real ``tradeflow`` CLI.

A configured ``TRADEFLOW_REDIS_URL`` that does not answer is retried, then reported as an
error naming it; the embedded Redis recorded in ``$TRADEFLOW_HOME/embedded.json`` (here a
test-owned redis-server holding a run of its own) is never read in its place. With nothing
configured the embedded Redis serves, and the command says so in one line on stderr. A
worker told the data set it must run on (``TRADEFLOW_EXPECT_EPOCH``, as ``tradeflow workers``
tells its nodes) refuses to start on another. A new embedded Redis whose free port another Redis
took first never adopts that one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.definitions.validation import load_definition
from engine.ops import embedded as embedded_redis
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from tests.faults.harness import chain_definition
from tests.faults.redis_server import RedisServer
from tests.ports import reserve_port

TRADEFLOW = str(Path(sys.executable).parent / "tradeflow")
PREFIX = "tfchoice"


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[RedisServer, Path]]:
    """A redis-server recorded as the embedded one of a TRADEFLOW_HOME, holding run ``from-embedded``."""
    server = RedisServer(tmp_path / "embedded", appendonly=False).start()
    home = tmp_path / "home"
    home.mkdir()
    (home / "embedded.json").write_text(json.dumps({"url": server.url}))
    client = redis.Redis.from_url(server.url)
    engine = Engine(RedisStore(client, Keys(PREFIX)), MemoryEnqueuer())
    engine.publish(load_definition(json.dumps(chain_definition("chain", ["a"]))))
    engine.start("chain", {"key": "k"}, run="from-embedded")
    try:
        yield server, home
    finally:
        client.close()
        server.close()


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEFLOW_")}
    return {**env, "TRADEFLOW_HOME": str(home), "TRADEFLOW_KEY_PREFIX": PREFIX, "TRADEFLOW_MORNING_RUN": "0",
            "TRADEFLOW_EVENTS": "0", **extra}


def test_a_configured_redis_that_is_down_is_an_error_never_the_embedded_one(
        tmp_path: Path, embedded: tuple[RedisServer, Path]) -> None:
    _, home = embedded
    down = RedisServer(tmp_path / "configured").start()
    down.kill()
    commands = (["runs"], ["accounts", "list"])
    procs = [subprocess.Popen([TRADEFLOW, *args], env=_env(home, TRADEFLOW_REDIS_URL=down.url),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in commands]  # side by side: each waits out its own retries
    try:
        for args, proc in zip(commands, procs, strict=True):
            out, err = proc.communicate(timeout=300)
            done = subprocess.CompletedProcess(args, proc.returncode, out, err)
            assert "from-embedded" not in done.stdout and done.stdout == "", (args, done.stdout)
            assert done.returncode == 75, (args, done.stdout, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
            assert down.url in lines[0] and "does not answer (4 attempts)" in lines[0], lines[0]  # the default
            assert "re-running" in lines[0], lines[0]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    down.close()


def test_nothing_configured_uses_the_embedded_redis_and_says_so(embedded: tuple[RedisServer, Path]) -> None:
    server, home = embedded
    done = subprocess.run([TRADEFLOW, "runs", "--json"], env=_env(home), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [r["run"] for r in json.loads(done.stdout)] == ["from-embedded"]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"note: using the embedded Redis at {server.url}"), line


def test_nothing_configured_and_the_recorded_embedded_redis_down_is_an_error(
        embedded: tuple[RedisServer, Path]) -> None:
    server, home = embedded
    server.kill()
    done = subprocess.run([TRADEFLOW, "runs", "--json"], env=_env(home), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert "embedded.json" in line and "does not answer" in line, line


def test_a_worker_refuses_a_data_set_it_was_not_started_on(tmp_path: Path,
                                                           embedded: tuple[RedisServer, Path]) -> None:
    server, home = embedded
    env = _env(home, TRADEFLOW_REDIS_URL=server.url, TRADEFLOW_EXPECT_EPOCH="the-fleets-own-epoch",
               TRADEFLOW_SERVICE_MODULES="tests.faults.services",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "engine.worker", "worker", "-Q", "faults",
                           "-P", "solo", "-l", "INFO", "--without-gossip", "--without-mingle"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 78, done.stderr[-3000:]
    assert f"refusing to start on {server.url}" in done.stderr, done.stderr[-3000:]


def test_a_new_embedded_redis_never_adopts_another_redis_that_took_its_port(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The port picked is free, then another Redis binds it before the embedded one starts (forced here:
    ``free_port`` hands out the other's port first); the embedded one goes on another port."""
    other = RedisServer(tmp_path / "other", appendonly=False).start()
    spare = reserve_port()
    ports = iter([other.port, spare.port])
    monkeypatch.setattr(embedded_redis, "free_port", lambda: next(ports))
    home = tmp_path / "home"
    try:
        url = embedded_redis.start_embedded(home)
        assert url == f"redis://127.0.0.1:{spare.port}/0"
        assert json.loads((home / "embedded.json").read_text())["url"] == url
        assert embedded_redis.serves_from(url, home / "redis")
        assert not embedded_redis.serves_from(other.url, home / "redis")
    finally:
        embedded_redis.stop_embedded(home)
        spare.release()
        other.close()
