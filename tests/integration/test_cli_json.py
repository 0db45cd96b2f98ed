"""``tradeflow runs --json``, ``tradeflow list --json`` and where beat keeps its schedule (issue 14, item 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.definitions.validation import load_definition
from engine.testing import delete_prefix, make_store
from tests.faults.harness import chain_definition

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def _env(redis_url: str, key_prefix: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEFLOW_")}
    return {**env, "TRADEFLOW_REDIS_URL": redis_url, "TRADEFLOW_KEY_PREFIX": key_prefix,
            "TRADEFLOW_BROKER_PREFIX": f"{key_prefix}:q:", "TRADEFLOW_HOME": str(home),
            "TRADEFLOW_MORNING_RUN": "0", "TRADEFLOW_EVENTS": "0", "PYTHONPATH": str(ROOT)}


def _json(args: list[str], env: dict[str, str]) -> object:
    done = subprocess.run([str(BIN / "tradeflow"), *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_runs_and_list_print_json(real_redis: redis.Redis, redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    engine = Engine(make_store(real_redis, key_prefix), MemoryEnqueuer())
    engine.publish(load_definition(json.dumps(chain_definition("chain", ["a"]))))
    ids = engine.start_many("chain", [{"key": "k1"}, {"key": "k2"}], run="nightly")
    engine.cancel(ids[1], reason="test")
    env = _env(redis_url, key_prefix, tmp_path)

    assert _json(["runs", "--json"], env) == [
        {"run": "nightly", "total": 2, "finished": 1, "shadow": False, "running": 1, "waiting": 0, "awaiting": 0,
         "gathering": 0, "paused": 0, "succeeded": 0, "failed": 0, "cancelled": 1}]
    one = _json(["runs", "nightly", "--json"], env)
    assert isinstance(one, dict) and one["run"] == "nightly" and one["cancelled"] == 1
    listed = _json(["list", "--run", "nightly", "--json"], env)
    assert isinstance(listed, list) and not any(i["shadow"] for i in listed)
    assert sorted((i["id"], i["status"], i["node"], i["workflow"], i["seq"]) for i in listed) == sorted(
        [(ids[0], "running", "a", "chain", 1), (ids[1], "cancelled", "a", "chain", 1)])
    assert _json(["list", "--run", "nightly", "--status", "cancelled", "--json"], env)[0]["id"] == ids[1]  # type: ignore[index]


def test_beat_keeps_its_schedule_under_tradeflow_home(real_redis: redis.Redis, redis_url: str, key_prefix: str,
                                                      tmp_path: Path) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "engine.worker", "beat", "-l", "INFO"],
                            env=_env(redis_url, key_prefix, home), cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 240
        while not list(home.glob("celerybeat-schedule*")) and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.2)
        assert list(home.glob("celerybeat-schedule*")), f"beat exited {proc.poll()}; home: {list(home.glob('*'))}"
        assert not list(cwd.iterdir())
    finally:
        proc.terminate()
        proc.wait(30)
        delete_prefix(real_redis, key_prefix)
