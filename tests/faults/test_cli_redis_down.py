"""One-line errors when Redis is unreachable (issue 14, item 4), through real ``tradeflow`` processes.

Pass criteria, for every command tried: exit status 75, exactly one line on stderr, no
traceback, and the line says whether re-running is safe: before anything was done (the
configured Redis is down) always; when Redis goes away half-way, from the command's own
declaration (``pm approve`` and ``pm submit`` are idempotent; ``runs`` only reads).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.definitions.validation import load_definition
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from tests.faults.harness import chain_definition
from tests.faults.redis_server import RedisServer

TRADEFLOW = str(Path(sys.executable).parent / "tradeflow")
PREFIX = "tfdown"
COMMANDS = [
    ["pm", "approve", "rebalance-2026-11-27", "CA-0001"],
    ["pm", "submit", "rebalance-2026-11-27", "--no-watch"],
    ["pm", "run", "--no-wait", "--no-watch"],
    ["accounts", "list"],
    ["runs", "--json"],
    ["inspect", "some-instance"],
    ["start", "chain", "--data", '{"key": "k"}'],
    ["definitions", "list"],
    ["console", "users", "list"],
    ["console", "token", "create", "ci-bot"],
]


#: The CLI's retries of a Redis that does not answer, shortened (defaults: 4 attempts from 0.25 s, ≈1.75 s of
#: waits per command; tests/faults/test_redis_choice.py runs them); two attempts still retry.
QUICK_RETRIES = {"TRADEFLOW_REDIS_CONNECT_ATTEMPTS": "2", "TRADEFLOW_REDIS_CONNECT_WAIT": "0.05"}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEFLOW_")}
    return {**env, "TRADEFLOW_HOME": str(tmp_path / "home"), "TRADEFLOW_KEY_PREFIX": PREFIX,
            "TRADEFLOW_PM_PREFIX": f"{PREFIX}:pm:", "TRADEFLOW_MORNING_RUN": "0", "TRADEFLOW_EVENTS": "0",
            **QUICK_RETRIES, **extra}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[RedisServer]:
    """A running test-owned Redis holding run ``slow``: one instance that never moves (nothing works it)."""
    server = RedisServer(tmp_path / "live", appendonly=False).start()
    client = redis.Redis.from_url(server.url)
    engine = Engine(RedisStore(client, Keys(PREFIX)), MemoryEnqueuer())
    engine.publish(load_definition(json.dumps(chain_definition("chain", ["a"]))))
    engine.start("chain", {"key": "k"}, run="slow")
    try:
        yield server
    finally:
        client.close()
        server.close()


def _assert_one_line(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 75, (done.args, done.returncode, done.stderr)
    assert len(lines) == 1 and "Traceback" not in done.stderr, (done.args, done.stderr)
    assert lines[0].startswith("error: Redis"), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def test_every_command_against_a_stopped_redis_says_in_one_line_that_rerunning_is_safe(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "stopped").start()
    server.kill()
    env = _env(tmp_path, TRADEFLOW_REDIS_URL=server.url)
    procs = [subprocess.Popen([TRADEFLOW, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in COMMANDS]
    try:
        for args, proc in zip(COMMANDS, procs, strict=True):
            out, err = proc.communicate(timeout=300)
            done = subprocess.CompletedProcess(args, proc.returncode, out, err)
            _assert_one_line(done, server.url, "does not answer (2 attempts)", "Nothing was done", "is safe")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        server.close()


@pytest.mark.parametrize("args", [["pm", "approve", "r1", "CA-0001"], ["pm", "submit", "r1", "--no-watch"]],
                         ids=["approve", "submit"])
def test_pm_decisions_losing_their_redis_half_way_say_they_are_idempotent(
        tmp_path: Path, live: RedisServer, args: list[str]) -> None:
    """The engine's Redis answers; the portfolio manager's (proposals, brokerage) is down."""
    down = RedisServer(tmp_path / "pm").start()
    down.kill()
    env = _env(tmp_path, TRADEFLOW_REDIS_URL=live.url, TRADEFLOW_PM_REDIS_URL=down.url)
    done = subprocess.run([TRADEFLOW, *args], env=env, capture_output=True, text=True, timeout=300)
    _assert_one_line(done, "is safe", "idempotent", f"`tradeflow pm {args[1]}`")


#: Commands a client sends to connect or to check that Redis answers, before it reads anything.
HANDSHAKE = {"ping", "hello", "auth", "select", "NULL", ""}


def _following(client: redis.Redis, before: set[str]) -> bool:
    """True once a client not in ``before`` has sent a command past the handshake: the command under
    test is past its start-up check (``wait_for_configured``'s PING) and reading the run."""
    return any(c["id"] not in before and c.get("cmd", "") not in HANDSHAKE and not c.get("cmd", "").startswith("client")
               for c in client.client_list())


def test_runs_watching_when_redis_dies_ends_with_one_line(tmp_path: Path, live: RedisServer) -> None:
    client = redis.Redis.from_url(live.url)
    before = {c["id"] for c in client.client_list()}  # the fixture's and this one
    proc = subprocess.Popen([TRADEFLOW, "runs", "slow"], env=_env(tmp_path, TRADEFLOW_REDIS_URL=live.url),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 240
        while not _following(client, before) and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.1)  # until the command is past its start-up check and following the run
        assert proc.poll() is None, proc.communicate()
        assert _following(client, before), "the command never read the run"
        client.close()
        live.kill()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_one_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
                     "Re-running `tradeflow runs` is safe (it only reads)")
