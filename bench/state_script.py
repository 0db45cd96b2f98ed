"""Redis CPU per call of ``state.lua``'s common operations, two versions of the script side by side.

    .venv/bin/python -m bench.state_script --other OLD/state.lua [--instances 2000] [--rounds 3]

On the Redis at ``TRADEFLOW_REDIS_URL`` (use a redis-server of its own: the figures are the
whole server's ``used_cpu_user + used_cpu_sys``), the same operations go through this checkout's
``engine/store/lua/state.lua`` and through ``--other`` (e.g. main's, from ``git show
main:engine/store/lua/state.lua``), interleaved round after round, each on instances of its own:
``create_many`` (per instance), ``start`` (pipelined), an ``advance`` to a queued step (pipelined,
with a context entry, an activity and a 1.1 KB step message, as a drained step's), and an
``advance`` to ``succeeded``. Pipelined, so a call's round trip is not in its figure: this is
what the script itself costs Redis. Medians per version; nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections import defaultdict
from pathlib import Path

import redis

from engine.instance import TERMINAL_STATUSES, Activity, InstanceStatus, Outcome
from engine.store.codec import Envelope
from engine.store.keys import Keys
from engine.store.redis_store import NewInstance, Placement, RedisStore

HERE = Path(__file__).resolve().parents[1] / "engine" / "store" / "lua" / "state.lua"
CONTEXT = {"holdings": [{"symbol": f"S{i}", "qty": i * 10, "price": 12.5 + i} for i in range(12)]}
MESSAGE = "m" * 1100


def _source(path: Path) -> str:
    terminal = ", ".join(f"{status.value} = true" for status in sorted(TERMINAL_STATUSES))
    return path.read_text().replace("__TERMINAL__", terminal)


def _cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _act(seq: int, node: str, now: float) -> Activity:
    return Activity(seq=seq, node=node, attempt=1, outcome=Outcome.APPLIED, worker="w@h:1", started_at=now,
                    ended_at=now)


def one_round(client: redis.Redis, source: str, n: int) -> dict[str, float]:
    """Microseconds of Redis CPU per call of each operation, ``n`` instances through ``source``."""
    prefix = f"bench-state-{uuid.uuid4().hex[:8]}"
    store = RedisStore(client, Keys(prefix), retention_seconds=3600)
    store._state = client.register_script(source)  # the version measured
    now, out = time.time(), {}
    began = _cpu(client)
    store.create([NewInstance(f"i{k}", "w", 1, "r1", {"account": f"A{k}"}, now, _act(0, "a", now),
                              Placement.step("a", now + 60)) for k in range(n)])
    out["create (per instance)"] = (_cpu(client) - began) / n * 1e6
    for seq, node in enumerate(["a", "b", "c"], start=1):
        began = _cpu(client)
        pipe = client.pipeline(transaction=False)
        for k in range(n):
            store._call("start", f"i{k}", {"node": node, "seq": seq, "attempt": 1, "now": now,
                                           "carrier": f"{node}:{seq}:1@h:1"}, {}, None, client=pipe)
        pipe.execute()
        out[f"start #{seq}"] = (_cpu(client) - began) / n * 1e6
        began = _cpu(client)
        _advance(store, n, seq, node, now, Placement.queued_step("bcd"[seq - 1], 60),
                 Envelope(f"{prefix}:q", MESSAGE))
        out[f"advance to a queued step #{seq}"] = (_cpu(client) - began) / n * 1e6
    began = _cpu(client)
    _advance(store, n, 4, "d", now, Placement.end("done", InstanceStatus.SUCCEEDED), None)
    out["advance to succeeded"] = (_cpu(client) - began) / n * 1e6
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
    return out


def _advance(store: RedisStore, n: int, seq: int, node: str, now: float, placement: Placement,
             send: Envelope | None) -> None:
    for low in range(0, n, 500):
        store.collect()
        for k in range(low, min(n, low + 500)):
            store.advance(f"i{k}", seq=seq, activity=_act(seq, node, now), placement=placement,
                          context=(node, CONTEXT), carrier="", send=send)
        store.send_collected()


def main(argv: list[str] | None = None) -> None:
    """Print the medians per operation and version."""
    parser = argparse.ArgumentParser(prog="python -m bench.state_script", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", type=Path, required=True, help="the other state.lua (e.g. main's)")
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(os.environ.get("TRADEFLOW_REDIS_URL", "redis://127.0.0.1:6379/0"))
    versions = {"other": _source(args.other), "this": _source(HERE)}
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    for number in range(args.rounds):
        for name in (["other", "this"] if number % 2 == 0 else ["this", "other"]):
            for what, us in one_round(client, versions[name], args.instances).items():
                found[(what.split(" #")[0], name)].append(us)
    for what in dict.fromkeys(what for what, _ in found):
        medians = {name: statistics.median(found[(what, name)]) for name in versions}
        print(f"{what:32s} other {medians['other']:6.2f} us   this {medians['this']:6.2f} us   "
              f"({medians['this'] / medians['other'] - 1:+.0%})")




if __name__ == "__main__":
    main()
