"""Which code sends each Redis command of a run: a MONITOR capture classified by command and key.

Usage, around a run on a redis-server of its own (MONITOR slows Redis: use this capture for
the *counts* by source, and a run without it for the CPU)::

    redis-cli -p 6393 monitor > /tmp/monitor.txt &      # then run the morning, then stop it
    python -m bench.redis_sources /tmp/monitor.txt --accounts 2000 [--usec morning.json]

Each line of MONITOR is one command, sent by a client (``[db ip:port]``) or by a script
(``[db lua]``, right after the script's call). A command is put in one source:

- ``engine script <name>``: an EVALSHA of the engine (``state.lua``'s operation named in its
  document, ``take.lua``, ``claim.lua``, ``limits.lua`` ...), and the commands it runs inside;
- ``kombu delivery``: BRPOP on the queues, kombu's unacked bookkeeping (``unacked``,
  ``unacked_index``, the engine's ``unacked_consumer`` owner and ``tradeflow_consumer:`` mark),
  the exchange bindings, the transactions of its restore;
- ``celery events``: PUBLISH of task events (``celeryev``); ``celery control``: the pidbox;
- ``platform``: the portfolio manager's own keys (the book, proposals, the brokerage: ``:pm:``);
- ``engine, plain commands``: other engine keys (metrics, marks, reads), ``bench driver``: INFO,
  the progress polling's SCARDs and the like.

With ``--usec`` (a morning's JSON written by ``python -m bench --only morning``, whose
``redis_commands.all`` holds INFO commandstats per account), each source's microseconds are
estimated as its calls of each command times that command's mean time.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shlex
import sys
from collections.abc import Iterable
from typing import Any

_LINE = re.compile(r"^\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$")


def _args(rest: str) -> list[str]:
    try:
        return shlex.split(rest)
    except ValueError:
        return rest.split()


def _script_name(args: list[str]) -> str:
    """The engine script an EVALSHA runs, told by its keys and first argument."""
    try:
        numkeys = int(args[2])
    except (IndexError, ValueError):
        return "?"
    keys, argv = args[3:3 + numkeys], args[3 + numkeys:]
    first = argv[0] if argv else ""
    if keys and ":pm:" in keys[0]:
        return "platform (book read)" if numkeys == 2 else "platform (proposal)"
    if keys and keys[0].endswith(":runs") and numkeys == 3:
        return "housekeep.lua"
    if first.startswith("{") and '"op"' in first:
        match = re.search(r'"op":\s*"([a-z_]+)"', first)
        return f"state.lua {match.group(1) if match else '?'}"
    if numkeys > 6 and len(keys) > 1 and keys[1].endswith(":acts"):
        return "state.lua create_many"
    if numkeys == 6 and keys and keys[1].endswith(":acts"):
        return "state.lua (operation past the argument's first 128 characters: advance, fail...)"
    if keys and ":q:" in keys[0] and len(argv) == 1:
        return "take.lua"
    if keys and any(k.endswith(":timers") or k.endswith(":deadlines") for k in keys):
        return "claim.lua"
    if keys and any(":limit" in k or ":rate" in k or ":pool" in k for k in keys):
        return "limits.lua"
    return f"other script ({numkeys} keys)"


def _script_source(name: str) -> str:
    return f"{name} (script)" if name.startswith("platform") else f"engine script {name}"


def classify(client: str, args: list[str], script: str | None) -> str:
    """The source of one MONITOR line (``script``: the script a ``lua`` line runs inside)."""
    command = args[0].upper() if args else ""
    if client == "lua":
        return _script_source(script or "?")
    if command in ("EVALSHA", "EVAL"):
        return _script_source(_script_name(args))
    key = args[1] if len(args) > 1 else ""
    joined = " ".join(args[1:3])
    if command == "PUBLISH":
        if "celeryev" in key:
            return "celery events"
        return "celery control"
    if "pidbox" in joined or command in ("SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE"):
        return "celery control"
    if command in ("BRPOP", "BLPOP") or "unacked" in key or "tradeflow_consumer:" in key \
            or "_kombu.binding" in key or command in ("MULTI", "EXEC", "WATCH", "UNWATCH"):
        return "kombu delivery"
    if ":pm:" in key:
        return "platform"
    if ":q:" in key:
        return "kombu delivery"
    if command in ("INFO", "PING", "CLIENT", "CONFIG", "SCRIPT", "SELECT", "HELLO", "MEMORY"):
        return "connections, INFO"
    if command == "SCARD":
        return "progress polling (SCARD of run sets)"
    return "engine, plain commands"


def tally(lines: Iterable[str]) -> dict[tuple[str, str], int]:
    """(source, command) -> calls, over MONITOR's ``lines``."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    script: str | None = None
    for line in lines:
        match = _LINE.match(line.rstrip("\n"))
        if not match:
            continue
        client, rest = match.groups()
        args = _args(rest)
        if not args:
            continue
        command = args[0].lower()
        if client != "lua" and command in ("evalsha", "eval"):
            script = _script_name(args)
        counts[(classify(client, args, script), command)] += 1
    return counts


def slowlog_tally(entries: Iterable[Any]) -> dict[tuple[str, str], list[float]]:
    """(source, command) -> [calls, microseconds], over raw SLOWLOG GET entries (every command logged:
    ``slowlog-log-slower-than 0``). A script's time includes the commands it ran (not logged apart)."""
    out: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for entry in _run_window(list(entries)):
        duration, raw = int(entry[2]), entry[3]
        args = [a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in raw]
        if not args or args[0].upper() == "SLOWLOG":
            continue
        row = out[(classify("", args, None), args[0].lower())]
        row[0] += 1
        row[1] += duration
    return out


def _run_window(entries: list[Any]) -> list[Any]:
    """The entries of the run itself: from a second before its first ``create_many`` (the daily start
    reads the book just before) to its last state change; the book's seeding and the clean-up left out."""
    def numkeys(entry: Any) -> int:
        raw = entry[3]
        return int(raw[2]) if len(raw) > 3 and raw[0].upper() == b"EVALSHA" and raw[2].isdigit() else -1

    creates = [int(e[1]) for e in entries if numkeys(e) > 6 and e[3][4].endswith(b":acts")]
    changes = [int(e[1]) for e in entries if numkeys(e) == 6]
    if not creates or not changes:
        return entries
    first, last = min(creates) - 1, max(changes)
    return [e for e in entries if first <= int(e[1]) <= last]


def slowlog_start(client: Any, length: int) -> None:
    """Log every command from now on (up to ``length``), the log emptied."""
    client.config_set("slowlog-max-len", length)
    client.config_set("slowlog-log-slower-than", 0)
    client.slowlog_reset()


def slowlog_read(client: Any) -> list[Any]:
    """Every SLOWLOG entry, unparsed; logging back to Redis's defaults."""
    client.config_set("slowlog-log-slower-than", 10000)
    client.set_response_callback("SLOWLOG GET", lambda response, **_: response)
    entries = client.execute_command("SLOWLOG GET", -1)
    client.config_set("slowlog-max-len", 128)
    return list(entries)


def table(counts: dict[tuple[str, str], int], accounts: int, usec: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows per source and command: calls per account and, with ``usec`` (commandstats per account),
    microseconds per account."""
    mean = {name: v["usec_per_account"] / v["calls_per_account"]
            for name, v in (usec or {}).items() if v.get("calls_per_account")}
    rows = []
    for (source, command), calls in sorted(counts.items()):
        per = calls / accounts
        rows.append({"source": source, "command": command, "calls_per_account": round(per, 3),
                     "usec_per_account": round(per * mean[command], 2) if command in mean else None})
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print the classified counts (and estimated microseconds) per account as JSON lines and a summary."""
    parser = argparse.ArgumentParser(prog="python -m bench.redis_sources", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("monitor", nargs="?", help="a file of MONITOR output")
    parser.add_argument("--accounts", type=int, help="accounts started in the captured run")
    parser.add_argument("--usec", help="a morning's JSON (bench/results/morning.json) for the time per command")
    parser.add_argument("--slowlog-start", metavar="URL", help="log every command of the Redis at URL from now on")
    parser.add_argument("--slowlog-read", metavar="URL",
                        help="read that log back: calls and measured microseconds per account by source")
    args = parser.parse_args(argv)
    if args.slowlog_start or args.slowlog_read:
        import redis

        client = redis.Redis.from_url(args.slowlog_start or args.slowlog_read)
        if args.slowlog_start:
            slowlog_start(client, 2_000_000)
            return
        totals: collections.defaultdict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
        for (source, command), (calls, us) in sorted(slowlog_tally(slowlog_read(client)).items()):
            print(json.dumps({"source": source, "command": command,
                              "calls_per_account": round(calls / args.accounts, 3),
                              "usec_per_account": round(us / args.accounts, 2)}))
            totals[source][0] += calls / args.accounts
            totals[source][1] += us / args.accounts
        for source, (calls, us) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
            print(f"{source:70s} {calls:8.2f} calls {us:8.1f} us per account", file=sys.stderr)
        return
    usec = None
    if args.usec:
        with open(args.usec) as f:
            usec = json.load(f)["runs"][0]["redis_commands"]["all"]
    with open(args.monitor, errors="replace") as f:
        rows = table(tally(f), args.accounts, usec)
    by_source: collections.defaultdict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for row in rows:
        print(json.dumps(row))
        by_source[row["source"]][0] += row["calls_per_account"]
        by_source[row["source"]][1] += row["usec_per_account"] or 0.0
    for source, (calls, us) in sorted(by_source.items(), key=lambda kv: -kv[1][1]):
        print(f"{source:55s} {calls:8.2f} calls {us:8.1f} us per account", file=sys.stderr)


if __name__ == "__main__":
    main()
