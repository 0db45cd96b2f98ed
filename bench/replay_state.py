"""Replay the ``state.lua`` calls of a real run through two versions of the script: Redis time per call.

Capture a run on a redis-server of its own, then replay its calls of ``state.lua``::

    redis-cli -p 6391 monitor > /tmp/monitor.txt &     # then a run, then stop the capture
    TRADEFLOW_REDIS_URL=redis://127.0.0.1:6391/0 python -m bench --only morning --accounts 2000 \\
        --solver greedy --no-peer
    git show <commit>:engine/store/lua/state.lua > /tmp/before.lua
    TRADEFLOW_REDIS_URL=redis://127.0.0.1:6391/0 python -m bench.replay_state /tmp/monitor.txt \\
        --other /tmp/before.lua [--rounds 3]

Every EVALSHA of the capture whose first argument is an operation's document (``{"op": ...}``)
is replayed in the capture's order (the order Redis ran them), pipelined, under a key prefix of
its own: once through ``--other`` and once through this checkout's script per round, the
versions alternated. The capture's own prefix (the bench's ``bench-…``) is found in its keys.
Printed per version: the median over the rounds of the whole server's CPU (``used_cpu_user +
used_cpu_sys``) and, from a SLOWLOG of every command, the mean microseconds per call of each
operation (a chain named with its number of items). Then whether both versions left the same
keys, values and TTLs and gave the same replies (``--compare``; a change of what is stored
shows here). Nothing asserts a time; a redis-server of its own keeps other clients out of the
figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from engine.instance import TERMINAL_STATUSES

HERE = Path(__file__).resolve().parents[1] / "engine" / "store" / "lua" / "state.lua"
_LINE = re.compile(r"^\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$")
_ESCAPES = {"\\": b"\\", '"': b'"', "n": b"\n", "r": b"\r", "t": b"\t", "a": b"\a", "b": b"\b"}
_PREFIX = re.compile(rb"^(.*?):\{")


@dataclass(frozen=True)
class Call:
    """One captured call of ``state.lua``: its operation (``chain of 3`` for a chain of three), keys and arguments."""

    op: str
    keys: list[bytes]
    args: list[bytes]


def monitor_arguments(rest: str) -> list[bytes]:
    """The arguments of one MONITOR line after its client (``"EVALSHA" "ab" ...``), unescaped to bytes."""
    out: list[bytes] = []
    i, end = 0, len(rest)
    while i < end:
        if rest[i] != '"':
            i += 1
            continue
        i += 1
        value = bytearray()
        while rest[i] != '"':
            if rest[i] == "\\" and rest[i + 1] == "x":
                value.append(int(rest[i + 2:i + 4], 16))
                i += 4
            elif rest[i] == "\\":
                value += _ESCAPES[rest[i + 1]]
                i += 2
            else:
                value += rest[i].encode("latin-1")
                i += 1
        out.append(bytes(value))
        i += 1
    return out


def state_calls(lines: Iterable[str]) -> Iterator[Call]:
    """The calls of ``state.lua`` among MONITOR ``lines`` (read as latin-1), in order."""
    for line in lines:
        match = _LINE.match(line.rstrip("\n"))
        if not match or match.group(1) == "lua" or not match.group(2).startswith('"EVALSHA"'):
            continue
        args = monitor_arguments(match.group(2))
        count = int(args[2])
        keys, argv = args[3:3 + count], args[3 + count:]
        if count < 6 or not argv or not argv[0].startswith(b"{"):
            continue
        try:
            doc = json.loads(argv[0])
        except ValueError:
            continue
        op = doc.get("op") if isinstance(doc, dict) else None
        if isinstance(op, str):
            yield Call(f"chain of {len(doc.get('items', []))}" if op == "chain" else op, keys, argv)


def script_source(path: Path) -> str:
    """``state.lua`` at ``path`` as the store loads it (its terminal statuses filled in)."""
    terminal = ", ".join(f"{status.value} = true" for status in sorted(TERMINAL_STATUSES))
    return path.read_text().replace("__TERMINAL__", terminal)


def capture_prefix(calls: list[Call]) -> bytes:
    """The key prefix of the captured run (what comes before ``:{<id>}`` in its first call's instance key)."""
    match = _PREFIX.match(calls[0].keys[0])
    if not match:
        raise SystemExit("no instance key (<prefix>:{<id>}) in the capture's first call")
    return match.group(1)


def of_prefix(calls: Iterable[Call], prefix: bytes) -> list[Call]:
    """The calls on instances under ``prefix`` only (another client's calls in the capture are not replayed)."""
    return [call for call in calls if call.keys[0].startswith(prefix + b":{")]


def replay(client: redis.Redis, calls: list[Call], source: str, old: bytes,
           keep: bool = False) -> tuple[dict[str, Any], dict[bytes, Any]]:
    """``calls`` through ``source`` under a new prefix: CPU seconds, microseconds per call of each
    operation, the replies; with ``keep``, what the keys hold (their prefix taken out) too. The keys
    are deleted after."""
    sha = client.script_load(source)
    new = f"replay-{uuid.uuid4().hex[:8]}".encode()
    client.config_set("slowlog-max-len", 50 * len(calls) + 1000)  # (the commands scripts run are logged too)
    client.config_set("slowlog-log-slower-than", 0)
    client.slowlog_reset()
    before = _cpu(client)
    replies = send(client, calls, sha, old, new)
    cpu = _cpu(client) - before
    client.config_set("slowlog-log-slower-than", 10000)
    client.set_response_callback("SLOWLOG GET", lambda response, **_: response)
    entries = client.execute_command("SLOWLOG GET", -1)
    client.config_set("slowlog-max-len", 128)
    per_op: dict[str, list[int]] = collections.defaultdict(list)
    ops = iter(call.op for call in calls)
    for entry in reversed(entries):  # (newest first: the calls' order reversed)
        if entry[3][:1] == [b"EVALSHA"] and entry[3][1] == sha.encode():
            per_op[next(ops, "?")].append(int(entry[2]))
    held = _holdings(client, new) if keep else {}
    delete_prefix(client, new)
    found = {"cpu_seconds": cpu, "us_per_call": {op: statistics.mean(us) for op, us in per_op.items()},
             "calls": {op: len(us) for op, us in per_op.items()},
             "replies": [repr(r) if isinstance(r, Exception) else r for r in replies]}
    return found, held


def send(client: redis.Redis, calls: list[Call], sha: str, old: bytes, new: bytes) -> list[Any]:
    """``calls`` through the loaded script ``sha``, their keys and documents moved from prefix ``old``
    to ``new``, pipelined 200 at a time in order: the replies (an error as its exception)."""
    replies: list[Any] = []
    pipe = client.pipeline(transaction=False)
    for call in calls:
        keys = [key.replace(old, new) for key in call.keys]
        pipe.execute_command("EVALSHA", sha, len(keys), *keys, call.args[0].replace(old, new), *call.args[1:])
        if len(pipe) >= 200:
            replies += pipe.execute(raise_on_error=False)
    replies += pipe.execute(raise_on_error=False)
    return replies


def delete_prefix(client: redis.Redis, prefix: bytes) -> None:
    """Delete every key under ``prefix``."""
    for key in client.scan_iter(match=prefix + b"*", count=2000):
        client.delete(key)


def _cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _holdings(client: redis.Redis, prefix: bytes) -> dict[bytes, Any]:
    """Every key under ``prefix`` (named without it): its type, content and whether it expires."""
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(match=prefix + b"*", count=2000):
        kind = client.type(key).decode()
        value: Any
        if kind == "hash":
            value = {field: v.replace(prefix, b"P") for field, v in client.hgetall(key).items()}
        elif kind == "list":
            value = [v.replace(prefix, b"P") for v in client.lrange(key, 0, -1)]
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = client.get(key)
        out[key.replace(prefix, b"P", 1)] = (kind, value, client.ttl(key) > 0)
    return out


def versions_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """The command line of a replay of a capture through two versions of ``state.lua``: the capture,
    ``--other`` (the other version) and ``--prefix``."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("monitor", type=Path, help="a file of MONITOR output")
    parser.add_argument("--other", type=Path, required=True, help="the other state.lua (e.g. an earlier commit's)")
    parser.add_argument("--prefix", help="the captured run's key prefix (default: its first call's)")
    return parser


def captured(monitor: Path, prefix: str | None = None) -> tuple[list[Call], bytes]:
    """The calls of ``state.lua`` in the capture ``monitor`` on the captured run's keys (under
    ``prefix``, by default its first call's), and that prefix."""
    with monitor.open(encoding="latin-1") as lines:
        calls = list(state_calls(lines))
    if not calls:
        raise SystemExit(f"{monitor}: no call of state.lua in this capture")
    old = prefix.encode() if prefix else capture_prefix(calls)
    return of_prefix(calls, old), old


def main(argv: list[str] | None = None) -> None:
    """Print each version's figures and, with ``--compare``, whether they stored the same."""
    parser = versions_parser("python -m bench.replay_state", __doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare", action="store_true", help="also compare what each version stored")
    args = parser.parse_args(argv)
    calls, old = captured(args.monitor, args.prefix)
    client = redis.Redis.from_url(os.environ.get("TRADEFLOW_REDIS_URL", "redis://127.0.0.1:6379/0"))
    versions = {"other": script_source(args.other), "this": script_source(HERE)}
    print(f"{len(calls)} calls of state.lua: " + ", ".join(
        f"{op} {n}" for op, n in collections.Counter(call.op for call in calls).most_common()))
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in versions}
    for number in range(args.rounds):
        for name in (["other", "this"] if number % 2 == 0 else ["this", "other"]):
            rounds[name].append(replay(client, calls, versions[name], old)[0])
    for name, found in rounds.items():
        cpu = statistics.median(r["cpu_seconds"] for r in found)
        print(f"{name}: Redis CPU {cpu:.3f} s (median of {len(found)})")
        for op in sorted(found[0]["us_per_call"]):
            us = statistics.median(r["us_per_call"].get(op, 0.0) for r in found)
            print(f"  {op:16s} {found[0]['calls'][op]:7d} calls  {us:7.1f} us per call")
    if args.compare:
        (a, held_a), (b, held_b) = (replay(client, calls, versions[name], old, keep=True) for name in versions)
        differing = sorted(key for key in held_a.keys() | held_b.keys() if held_a.get(key) != held_b.get(key))
        print(f"replies {'the same' if a['replies'] == b['replies'] else 'DIFFERENT'}; "
              f"{len(held_a)} keys, {len(differing)} differing")
        for key in differing[:3]:
            print(f"  {key.decode(errors='replace')}: {_difference(held_a.get(key), held_b.get(key))}")


def _difference(a: Any, b: Any) -> str:
    """What differs between two holdings of one key: a hash's fields by name, else both whole (cut short)."""
    if a and b and a[0] == b[0] == "hash":
        fields = sorted(f for f in a[1].keys() | b[1].keys() if a[1].get(f) != b[1].get(f))
        return "fields " + ", ".join(f.decode(errors="replace") for f in fields)
    return f"{str(a)[:80]} / {str(b)[:80]}"


if __name__ == "__main__":
    main()
