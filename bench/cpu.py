"""CPU seconds spent by each worker fleet, beat, Redis and the benchmark itself during a run.

Where the time of a run goes on a 2-core machine is mostly a question of who holds the CPU.
Each fleet is a process group of its own (``Fleet`` starts it in a new session), so its CPU
time is the sum over the group's processes, read from ``/proc`` (Linux; elsewhere the figures
are left out). Redis's own is INFO ``used_cpu_user + used_cpu_sys``: the whole server's, so
it includes whatever else used the shared Redis meanwhile. Redis's forks (an AOF rewrite, an RDB
save: ``used_cpu_*_children``, counted once the child has ended) are a part of their own: on a
machine that Redis shares with the workers, a rewrite of a big dataset takes a core from them.
"""

from __future__ import annotations

import os
import resource
from collections import Counter
from pathlib import Path

import redis

from engine.ops.fleet import Fleet

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_cpu_seconds(pgid: int, proc: Path = Path("/proc")) -> float:
    """User + system CPU seconds of every live process in process group ``pgid``."""
    total = 0
    for entry in proc.glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        # after "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        # utime stime cutime cstime (the c- ones: children that ended and were waited for)
        if int(fields[2]) == pgid:
            total += sum(int(f) for f in fields[11:15])
    return total / _TICKS


#: The CPU part of Redis's main process and the part of its forks (AOF rewrites, RDB saves).
REDIS_PART, REDIS_FORKS_PART = "redis-server (whole server)", "redis-server's forks (AOF rewrites)"
#: What the parts of the book's Redis are called, when the book has a Redis of its own.
BOOK_REDIS = "book's "


def redis_cpu_seconds(client: redis.Redis) -> float:
    """CPU seconds of Redis's main process so far (INFO ``used_cpu_user + used_cpu_sys``)."""
    return redis_cpu_parts(client)[REDIS_PART]


def redis_cpu_parts(client: redis.Redis, name: str = "") -> dict[str, float]:
    """CPU seconds of Redis's main process and of its forks that have ended, so far (each part's
    name led by ``name``: :data:`BOOK_REDIS` for the book's Redis)."""
    info = client.info("cpu")
    return {name + REDIS_PART: float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
            name + REDIS_FORKS_PART: float(info["used_cpu_user_children"]) + float(info["used_cpu_sys_children"])}


def redis_forks(client: redis.Redis) -> int:
    """How many times Redis has forked since it started (INFO ``total_forks``: AOF rewrites, saves)."""
    return int(client.info("stats").get("total_forks", 0))


def self_cpu_seconds() -> float:
    """CPU seconds of this process so far (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """``start()`` before the run, ``stop()`` after: CPU seconds per fleet, beat, Redis, bench."""

    def __init__(self, fleet: Fleet, client: redis.Redis, book_client: redis.Redis | None = None) -> None:
        self.fleet = fleet
        self.client = client
        #: The book's Redis when it is not ``client``: its CPU is a part of its own.
        self.book_client = book_client if book_client is not client else None
        self.names = _unique([f"worker {s.queue}" for s in fleet.specs]) + (["beat"] if fleet.beat else [])
        self.began: dict[str, float] = {}

    def snapshot(self) -> dict[str, float]:
        """CPU seconds used so far by each part."""
        parts = {name: group_cpu_seconds(p.pid) for name, p in zip(self.names, self.fleet.procs, strict=False)}
        parts.update(redis_cpu_parts(self.client))
        if self.book_client is not None:
            parts.update(redis_cpu_parts(self.book_client, BOOK_REDIS))
        parts["bench driver (this process)"] = self_cpu_seconds()
        return parts

    def start(self) -> None:
        """Remember where every counter stands."""
        self.began = self.snapshot()

    def stop(self) -> dict[str, float]:
        """CPU seconds of each part since :meth:`start`."""
        now = self.snapshot()
        return {name: round(now[name] - self.began.get(name, 0.0), 2) for name in now}


def _unique(names: list[str]) -> list[str]:
    """``names`` with a repeated one numbered (two fleets on the same queues: ``worker q``, ``worker q #2``)."""
    seen: Counter[str] = Counter()
    out: list[str] = []
    for name in names:
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return out


def command_stats(client: redis.Redis) -> dict[str, tuple[int, float]]:
    """INFO commandstats: per command, (calls, microseconds spent in it) so far -- the whole server's."""
    stats = {name.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"]))
             for name, v in client.info("commandstats").items()}
    io = client.info("stats")
    # the reads Redis's event loop processed: about one per round trip (a pipeline's commands come in one)
    stats[READS] = (int(io.get("total_reads_processed", 0)), 0.0)
    return stats


#: Not a command: INFO stats' ``total_reads_processed`` (the round trips Redis served, about), kept beside them.
READS = "~reads_processed"


def command_delta(before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]],
                  accounts: int) -> dict[str, object]:
    """Per account between two :func:`command_stats`: Redis commands (each a round trip unless
    pipelined), the time Redis spent in them, the five commands that cost most, and every command
    (``all``: calls and microseconds per account; a script's commands are counted both on their
    own and inside its EVALSHA's time)."""
    rows = {name: (calls - before.get(name, (0, 0.0))[0], usec - before.get(name, (0, 0.0))[1])
            for name, (calls, usec) in after.items()}
    reads = rows.pop(READS, (0, 0.0))[0]
    rows = {k: v for k, v in rows.items() if v[0] > 0}
    per = max(1, accounts)
    top = sorted(rows.items(), key=lambda kv: -kv[1][1])[:5]
    return {"commands_per_account": round(sum(c for c, _ in rows.values()) / per, 2),
            "command_ms_per_account": round(sum(u for _, u in rows.values()) / per / 1000, 3),
            "reads_per_account": round(reads / per, 2),
            "top": {name: {"calls_per_account": round(c / per, 2), "ms_per_account": round(u / per / 1000, 3)}
                    for name, (c, u) in top},
            "all": {name: {"calls_per_account": round(c / per, 3), "usec_per_account": round(u / per, 2)}
                    for name, (c, u) in sorted(rows.items(), key=lambda kv: -kv[1][1])}}
