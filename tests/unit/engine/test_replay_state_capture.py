"""``bench.replay_state`` on a real Redis: a MONITOR capture of the store's changes, replayed through
two versions of ``state.lua``, reports their calls and finds a difference of what they store."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from bench import replay_state
from engine.instance import Activity, InstanceStatus, Outcome
from engine.store.keys import Keys
from engine.store.redis_store import Envelope, NewInstance, Placement, RedisStore

NOW = 1_750_000_000.5


def _act(seq: int, node: str, outcome: Outcome = Outcome.APPLIED) -> Activity:
    return Activity(seq=seq, node=node, attempt=1, outcome=outcome, worker="test", started_at=NOW, ended_at=NOW)


def _changes(store: RedisStore) -> None:
    """Two instances created, started, three held transitions each, then one to awaiting."""
    queue = f"{store.keys.prefix}:queue"
    ids = ["i1", "i2"]
    assert store.create([NewInstance(i, "w", 1, "r1", {"k": 1}, NOW, _act(0, "a", Outcome.STARTED),
                                     Placement.queued_step("a", 60), send=Envelope(queue, f"m-{i}"))
                         for i in ids]) == [True, True]
    for iid in ids:
        assert store.start(iid, "a", 1, 1, NOW, carrier="a:1:1@h:1") is not None
        store.collect()
        for seq, (node, nxt) in enumerate([("a", "b"), ("b", "c"), ("c", "d")], start=1):
            store.advance(iid, seq=seq, activity=_act(seq, node), placement=Placement.step(nxt, NOW + 60),
                          context=(node, {"n": seq}), noop=_act(seq, node, Outcome.NOOP), carrier="a:1:1@h:1")
        store.send_collected()
        assert store.advance(iid, seq=4, activity=_act(4, "d"), placement=Placement.awaiting("review", None),
                             context=("d", {"n": 4}), carrier="").status is InstanceStatus.AWAITING


@pytest.fixture
def capture(redis_url: str, real_redis: redis.Redis, key_prefix: str, tmp_path: Path) -> Path:
    """A MONITOR capture (its raw lines) of :func:`_changes` under the test's prefix."""
    store = RedisStore(real_redis, Keys(key_prefix), retention_seconds=3600)
    watcher = redis.Redis.from_url(redis_url)
    lines = []
    with watcher.monitor() as monitor:
        _changes(store)
        real_redis.echo(f"end of {key_prefix}")
        while True:
            line = monitor.connection.read_response()
            line = line.decode("latin-1") if isinstance(line, bytes) else line
            if f'"ECHO" "end of {key_prefix}"' in line:
                break
            lines.append(line)
    watcher.close()
    path = tmp_path / "monitor.txt"
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")
    return path


def test_the_captured_calls_replay_alike_through_the_same_script(
        capture: Path, redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with capture.open(encoding="latin-1") as lines:
        calls = replay_state.of_prefix(replay_state.state_calls(lines), key_prefix.encode())
    assert [c.op for c in calls] == ["create_many", "start", "chain of 3", "advance", "start", "chain of 3", "advance"]
    monkeypatch.setenv("TRADEFLOW_REDIS_URL", redis_url)
    replay_state.main([str(capture), "--other", str(replay_state.HERE), "--rounds", "1", "--compare",
                       "--prefix", key_prefix])
    out = capsys.readouterr().out
    assert "chain of 3" in out and "replies the same; 0 keys" not in out
    assert ", 0 differing" in out and "replies the same" in out


def test_a_script_that_stores_otherwise_is_told_apart(
        capture: Path, redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "state.lua"  # a version whose transitions also keep a field of their own
    source = replay_state.HERE.read_text()
    marker = "  put('seq', seq)\n"
    assert marker in source
    other.write_text(source.replace(marker, marker + "  put('extra', '1')\n", 1))
    monkeypatch.setenv("TRADEFLOW_REDIS_URL", redis_url)
    replay_state.main([str(capture), "--other", str(other), "--rounds", "1", "--compare", "--prefix", key_prefix])
    out = capsys.readouterr().out
    assert ", 0 differing" not in out and "fields extra" in out
