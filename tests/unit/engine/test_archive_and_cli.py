"""The archive round trip, and the CLI's validate contract (exit status, FILE: /pointer: message)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fakeredis

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus
from engine.ops.archive import archive_runs, read_archived
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver
from tests.unit.engine.test_runtime import ACTIONS, FLOW

ROOT = Path(__file__).resolve().parents[3]


def test_archive_writes_finished_instances_and_reads_one_back(tmp_path: Path) -> None:
    engine = Engine(RedisStore(fakeredis.FakeRedis(), Keys("arch")), MemoryEnqueuer(), ManualClock(1e9))
    engine.publish(load_definition(json.dumps(FLOW)))
    done = engine.start_many("flow", [{"account": "ABCD"}, {"account": "bad"}], run="night")
    live = engine.start("flow", {"account": "WXYZ"}, run="night")
    driver = Driver(engine, ACTIONS)
    for _ in range(2):  # run the two first instances' steps only
        message = next(m for m, _ in driver.queue.messages if m.instance_id in done)
        driver.queue.messages = [(m, p) for m, p in driver.queue.messages if m is not message]
        driver.deliver(message)
    driver.queue.messages = [(m, p) for m, p in driver.queue.messages if m.instance_id != live]
    driver.run_until_idle()
    assert engine.get(live).status is InstanceStatus.RUNNING

    [(path, count)] = archive_runs(engine, ["night"], str(tmp_path))
    assert count == 2  # finished ones only; the live one stays out
    record = read_archived(str(tmp_path), done[1])
    assert record is not None
    assert record["instance"]["status"] == "failed" and record["instance"]["error"]["node"] == "fetch"
    assert [a["outcome"] for a in record["activities"]] == ["started", "failed"]
    assert read_archived(path, live) is None


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_validate_prints_pointer_lines_and_exits_1_without_traceback(tmp_path: Path) -> None:
    body = json.loads(json.dumps(FLOW))
    body["nodes"]["fetch"]["transitions"]["ok"] = "big_enogh"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(body))
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x",\n  "start": }')
    good = tmp_path / "good.json"
    good.write_text(json.dumps(FLOW))

    result = run_cli("definitions", "validate", str(good), str(bad), str(broken))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert f"{good}: ok" in result.stdout
    assert f"{bad}: /nodes/fetch/transitions/ok: " in result.stderr
    assert "did you mean 'big_enough'" in result.stderr
    assert f"{broken}: " in result.stderr and "line 2" in result.stderr

    assert run_cli("definitions", "validate", str(good)).returncode == 0


def test_every_shipped_definition_validates() -> None:
    files = sorted(str(p) for p in (ROOT / "definitions").glob("*.json") if p.name != "schema.json")
    files.append(str(ROOT / "engine" / "samples" / "pipeline.json"))
    result = run_cli("definitions", "validate", *files)
    assert result.returncode == 0, result.stderr
