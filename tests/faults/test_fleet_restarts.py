"""``tradeflow workers`` restarts a node that exits, never taking the other fleets down (issue 14, item 1).

Pass criteria: after ``kill -9`` of the ``faults`` node's main process in the middle of a run,
the engine node and beat keep their pids and keep running, ``tradeflow workers`` itself keeps
running, logs the exit and the restart, and starts a new ``faults`` node; every instance of
the run finishes with one transition per step.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis

from engine.api import Engine
from engine.broker import CeleryEnqueuer
from engine.definitions.validation import load_definition
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import store_of
from tests.faults.harness import RETENTION_SECONDS, chain_definition, lab_env
from tests.faults.invariants import check_invariants
from tests.faults.redis_server import RedisServer
from tests.integration.conftest import sender_app

TRADEFLOW = str(Path(sys.executable).parent / "tradeflow")


SEEN: set[int] = set()


def _nodes(pid: int) -> dict[str, int]:
    """The main processes ``tradeflow workers`` started, by queue (``beat`` for beat)."""
    found: dict[str, int] = {}
    for child in psutil.Process(pid).children():
        try:
            cmd = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        name = "beat" if "beat" in cmd else cmd[cmd.index("-Q") + 1] if "-Q" in cmd else "?"
        found[name] = child.pid
        SEEN.add(child.pid)
    return found


def _wait(check, timeout: float, what: str, log: Path) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_killed_node_is_restarted_and_the_others_keep_serving(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    prefix = "tfrestart"
    env = {**os.environ, **lab_env(tmp_path, server.url, prefix)}
    log = tmp_path / "workers.log"
    proc = subprocess.Popen([TRADEFLOW, "workers", "--fleet", "faults:prefork:2", "--fleet", "engine:threads:2"],
                            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=tmp_path)
    client = redis.Redis.from_url(server.url)
    engine = Engine(RedisStore(client, Keys(prefix), retention_seconds=RETENTION_SECONDS),
                    CeleryEnqueuer(sender_app(server.url, prefix)))
    try:
        _wait(lambda: set(_nodes(proc.pid)) == {"faults", "engine", "beat"}, 240, "the three nodes", log)
        before = _nodes(proc.pid)
        engine.publish(load_definition(json.dumps(chain_definition("chain", ["a", "b", "c"], timeout=5))))
        ids = engine.start_many("chain", [{"key": f"k{i}", "sleep": dict.fromkeys("abc", 0.2)} for i in range(30)],
                                run="restart")
        _wait(lambda: engine.progress("restart").finished >= 3, 120, "a few instances done", log)
        os.kill(before["faults"], signal.SIGKILL)
        killed_at = time.monotonic()
        _wait(lambda: _nodes(proc.pid).get("faults") not in (None, before["faults"]), 180, "a new faults node", log)
        restarted_after = time.monotonic() - killed_at
        _wait(lambda: engine.progress("restart").done, 180, "every instance done", log)
        assert proc.poll() is None, log.read_text()[-4000:]
        after = _nodes(proc.pid)
        assert after["engine"] == before["engine"] and after["beat"] == before["beat"], (before, after)
        text = log.read_text()
        assert "worker-faults exited with status -9" in text and "worker-faults restarted" in text, text[-4000:]
        figures = check_invariants(store_of(engine), ids, "restart")
        print(f"\nfleet restart (kill -9 of the faults node's main process): back in {restarted_after:.1f}s, "
              f"engine node and beat untouched; {figures.line()}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in SEEN:  # each node is its own process group: leave nothing behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        client.close()
        server.close()
