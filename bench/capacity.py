"""One Redis's ceiling: the engine's own Redis operations for N accounts, without the actions.

    .venv/bin/python -m bench --only capacity [--capacity-accounts 20000] [--capacity-clients 4]

1. **Record.** In a sandbox on the Redis at ``TRADEFLOW_REDIS_URL``, a book of ``RECORDED``
   seeded accounts runs its morning in this process (:class:`engine.testing.Driver`, every
   service's step inline under the rule of one default combined worker, :func:`combined_rule`:
   the transition before a ``reads_only`` step is held and sent with the next change as one
   ``chain`` call; the open is past, so each instance passes its wait at once): every ``state.lua`` and
   ``claim.lua`` call the store API makes (``create_many``, the timers' claim, ``advance``,
   ``chain``, ``start``, ``fail`` ...) is recorded as sent, by the instance it acts on. The
   actions' own reads of the book and their proposals are not recorded: they are the peer's
   work too, and live wherever the book lives.
2. **Replay.** On a Redis server of its own (``redis-server`` from ``PATH``, AOF every second as
   in production, a Unix socket), ``--capacity-clients`` processes replay the recording for
   ``--capacity-accounts`` fresh instance ids, pipelined: per group of ``RECORDED`` accounts the
   batch calls, then each account's k-th operation for every account in one pipeline, level by
   level (an account's operations stay in order). Each account also gets the broker's share of
   one step message taken from its list (``LPUSH``, ``RPOP``), as the default layout's ``solo``
   workers cost: a delivered step's start is its delivery's bookkeeping (no kombu ``unacked``
   entries) and a drained step's take rides a change. A ``prefork`` or ``threads`` worker adds
   kombu's bookkeeping per delivered message (``HSET``+``ZADD``, ``HDEL``+``ZREM`` and two round
   trips), not replayed here.
3. **Figures.** Accounts per second achieved by the clients; Redis's own CPU per account
   (``used_cpu_sys + used_cpu_user`` of the server over the replay) and the ceiling it implies
   for one Redis core (1 / that CPU); script calls per account, by operation; commands per
   account by name (INFO commandstats); memory per instance (``MEMORY USAGE`` of the hashes
   and activity lists, by final status: awaiting review = live, succeeded/failed = finished) and
   ``used_memory`` per account.

On a machine where the clients share the cores with Redis, the achieved rate is below the
ceiling; the CPU per account is the figure that carries to a bigger machine.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from bench.cpu import command_delta, command_stats, redis_cpu_seconds
from bench.sandbox import Sandbox

if TYPE_CHECKING:
    from engine.runtime.concerns.inline import WorkerRule

#: Accounts run for real to record their operations (one replay group).
RECORDED = 200
#: A step message's size in the broker list (Celery protocol 2 in kombu's envelope, measured ≈ 1.1 KB).
MESSAGE_BYTES = 1100
MEMORY_SAMPLE = 200


@dataclass
class Recording:
    """What RECORDED accounts sent: batch calls (not tied to one instance) and each instance's, in order."""

    batch: list[list[bytes]]
    per_instance: dict[str, list[list[bytes]]]
    ids: list[str]

    def calls_by_op(self) -> dict[str, float]:
        """Script calls per account by ``state.lua`` operation (``chain``: held transitions sent as one call;
        ``claim.lua``'s by that name), batch calls shared by the accounts."""
        counts: Counter[str] = Counter(_op(call) for call in self.batch)
        for calls in self.per_instance.values():
            counts.update(_op(call) for call in calls)
        return {op: round(n / len(self.ids), 2) for op, n in sorted(counts.items())}


class _Recorder(redis.Redis):
    """A client that remembers every successful EVALSHA of the scripts named (by sha)."""

    shas: dict[str, str] = {}
    calls: list[list[bytes]] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        reply = super().execute_command(*args, **options)
        if args and args[0] == "EVALSHA" and args[1] in self.shas:
            self.calls.append([_raw(a) for a in args])
        return reply

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        """A pipeline whose script calls are recorded too (the timers' wakes, a step's riders), in order."""
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def recorded(raise_on_error: bool = True) -> Any:
            sent = [args for args, _ in pipe.command_stack if args and args[0] == "EVALSHA" and args[1] in self.shas]
            reply = execute(raise_on_error)
            self.calls.extend([_raw(a) for a in args] for args in sent)
            return reply

        pipe.execute = recorded  # type: ignore[method-assign]
        return pipe


def _op(call: list[bytes]) -> str:
    """The ``state.lua`` operation of a recorded EVALSHA (its ARGV[1] document's ``op``), else ``claim.lua``."""
    numkeys = int(call[2])
    try:
        return str(json.loads(call[3 + numkeys])["op"])
    except (ValueError, KeyError, TypeError, IndexError):
        return "claim.lua"


def _raw(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _script_shas(client: redis.Redis) -> dict[str, str]:
    """Load the store's ``state.lua`` and ``claim.lua`` (as the store registers them) on ``client``; sha -> name."""
    from engine.store.instances import state_script
    from engine.store.runs import claim_script

    return {client.script_load(state_script(client).script): "state.lua",
            client.script_load(claim_script(client).script): "claim.lua"}


def record(redis_url: str, accounts: int = RECORDED, seed: int = 7) -> Recording:
    """Run ``accounts`` accounts' morning in this process and record the store's script calls."""
    import order_calc.actions  # noqa: F401  (registers plan_orders)
    import portfolio_manager.actions  # noqa: F401  (registers the portfolio manager's actions)
    from engine.api import Engine
    from engine.broker import MemoryEnqueuer
    from engine.store.redis_store import RedisStore
    from engine.testing import Driver, runtime_of
    from portfolio_manager.cli import last_session
    from portfolio_manager.config import DEFAULT_DEFINITIONS_DIR
    from portfolio_manager.daily import ensure_definitions, start_daily_rebalance
    from portfolio_manager.generator import seed_book
    from portfolio_manager.services import use_services

    with Sandbox(redis_url) as sandbox:
        recorder = _Recorder.from_url(redis_url)
        _Recorder.shas = _script_shas(sandbox.client)
        _Recorder.calls = []
        store = RedisStore(recorder, sandbox.store.keys, sandbox.store.retention_seconds)
        engine = Engine(store, MemoryEnqueuer())
        services = sandbox.services()
        use_services(services)
        ensure_definitions(engine, DEFAULT_DEFINITIONS_DIR)
        run_date = last_session()
        seed_book(services.book, accounts, seed, run_date)
        _Recorder.calls = []  # publishing is not a morning's work
        started = start_daily_rebalance(engine, services.book, run_date, run="capacity",
                                        wait_for_open=True, review_until=datetime.now(UTC) + timedelta(days=1))
        driver = Driver(engine, inline=True)
        runtime = runtime_of(engine)
        everything = combined_rule()
        while True:
            runtime.tick()
            if not driver.queue.messages:
                break
            while driver.queue.messages:
                message = driver.queue.pop()
                runtime.run_step(message.instance_id, message.node, message.seq, message.attempt,
                                 driver.execute, everything)
        ids = sandbox.store.run_ids("capacity")
        recorder.close()
        calls = list(_Recorder.calls)
    prefix = sandbox.store.keys.instance("").encode()
    by_id: dict[str, list[list[bytes]]] = defaultdict(list)
    batch: list[list[bytes]] = []
    for call in calls:
        numkeys = int(call[2])
        first = call[3] if numkeys else b""
        iid = _instance_of(first, prefix)
        if iid and numkeys == 6 and b'"create_many"' not in call[3 + numkeys][:400]:
            by_id[iid].append(call)
        else:
            batch.append(call)
    if started.total != len(ids):
        raise RuntimeError(f"recorded run started {started.total} instances but lists {len(ids)}")
    return Recording(batch, dict(by_id), ids)


def combined_rule() -> WorkerRule:
    """The inline rule of one default combined worker (every registered service's queue): each
    service's steps run inline, and the transition before a ``reads_only`` step is held and sent
    with the next change (one ``chain`` call of ``state.lua``), as :mod:`engine.app` binds it."""
    from engine.service import registry
    from engine.testing import inline_rule

    services = frozenset(spec.service for spec in registry)
    return inline_rule(min(services), registry, lambda: services)


def _instance_of(key: bytes, prefix: bytes) -> str | None:
    """The instance id in an instance key ``<prefix>:{<id>}`` (None for another key)."""
    head, _, _ = prefix.partition(b"{")
    if key.startswith(head + b"{") and key.endswith(b"}"):
        return key[len(head) + 1:-1].decode()
    return None


def _substitute(call: list[bytes], mapping: dict[bytes, bytes]) -> list[bytes]:
    out = []
    for part in call:
        for old, new in mapping.items():
            if old in part:
                part = part.replace(old, new)
        out.append(part)
    return out


def _replay_worker(args: tuple[str, Recording, int, int, str]) -> int:
    """One client process: replay ``groups`` groups of the recording with fresh ids; accounts done."""
    url, recording, groups, pipeline_depth, name = args
    queue = name.encode()
    client = redis.Redis.from_url(url)
    message = os.urandom(MESSAGE_BYTES // 2).hex().encode()
    done = 0
    for _ in range(groups):
        mapping = {old.encode(): uuid.uuid4().hex[:len(old)].encode() for old in recording.ids}
        pipe = client.pipeline(transaction=False)
        for call in recording.batch:  # create_many per 500, the timers' claim
            big = b"".join(call)
            pipe.execute_command(*_substitute(call, {o: n for o, n in mapping.items() if o in big}))
        pipe.execute()
        levels = max(len(ops) for ops in recording.per_instance.values())
        for level in range(levels):
            pipe = client.pipeline(transaction=False)
            n = 0
            for old, ops in recording.per_instance.items():
                if level < len(ops):
                    pipe.execute_command(*_substitute(ops[level], {old.encode(): mapping[old.encode()]}))
                    n += 1
                if n >= pipeline_depth:
                    pipe.execute()
                    pipe, n = client.pipeline(transaction=False), 0
            pipe.execute()
        pipe = client.pipeline(transaction=False)  # one step message per account, pushed and taken
        for _ in mapping:
            pipe.lpush(queue, message)
            pipe.rpop(queue)
        pipe.execute()
        done += len(recording.ids)
    client.close()
    return done


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of this benchmark's own (AOF every second, as production), on a Unix socket."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found on PATH: the capacity benchmark needs a Redis of its own")
    home = Path(tempfile.mkdtemp(prefix="tradeflow-capacity-"))
    sock = home / "redis.sock"
    proc = subprocess.Popen([binary, "--port", "0", "--unixsocket", str(sock), "--dir", str(home),
                             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                             "--maxmemory-policy", "noeviction"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        url = f"unix://{sock}"
        end = time.monotonic() + 20
        while True:
            try:
                with redis.Redis.from_url(url) as probe:
                    probe.ping()
                break
            except (redis.ConnectionError, OSError):
                if time.monotonic() > end or proc.poll() is not None:
                    raise RuntimeError("the capacity benchmark's redis-server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(home, ignore_errors=True)


def run(redis_url: str, accounts: int = 20_000, clients: int = 4, pipeline_depth: int = 100,
        seed: int = 7) -> dict[str, Any]:
    """Record on ``redis_url``, replay ``accounts`` accounts on a private Redis; the figures."""
    recording = record(redis_url, RECORDED, seed)
    per_account_ops = statistics.mean(len(v) for v in recording.per_instance.values())
    groups = max(1, round(accounts / len(recording.ids)))
    shares = [groups // clients + (1 if i < groups % clients else 0) for i in range(clients)]
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        _script_shas(client)
        memory_before = int(client.info("memory")["used_memory"])
        cpu_before, commands = redis_cpu_seconds(client), command_stats(client)
        began = time.monotonic()
        with multiprocessing.get_context("spawn").Pool(clients) as pool:
            done = sum(pool.map(_replay_worker, [(url, recording, share, pipeline_depth, "capacity:q:step")
                                                 for share in shares if share]))
        seconds = time.monotonic() - began
        cpu = redis_cpu_seconds(client) - cpu_before
        calls = command_delta(commands, command_stats(client), done)
        memory_after = int(client.info("memory")["used_memory"])
        memory = instance_memory(client)
        client.close()
    cpu_ms = cpu / done * 1000
    return {"recorded_accounts": len(recording.ids), "accounts": done, "clients": clients,
            "pipeline_depth": pipeline_depth, "seconds": round(seconds, 2),
            "accounts_per_s": round(done / seconds, 1),
            "store_calls_per_account": round(per_account_ops + len(recording.batch) / len(recording.ids), 2),
            "store_calls_by_op": recording.calls_by_op(),
            "broker_commands_per_account": 2,
            # a worker's round trips: the store's calls, and the message's delivery (BRPOP; a solo
            # worker's start is the delivery's bookkeeping, a store call already); the push rides in
            # the script that queues the step
            "round_trips_per_account": round(per_account_ops + len(recording.batch) / len(recording.ids) + 1, 2),
            "redis_cpu_ms_per_account": round(cpu_ms, 3),
            "ceiling_accounts_per_s": round(1000 / cpu_ms) if cpu_ms else None,
            "redis_commands": calls,
            "used_memory_per_account_bytes": round((memory_after - memory_before) / done),
            "memory": memory}


def instance_memory(client: redis.Redis, sample: int = MEMORY_SAMPLE) -> dict[str, Any]:
    """``MEMORY USAGE`` of instance hashes and activity lists, by status, from a sample."""
    by_status: dict[str, list[int]] = defaultdict(list)
    seen = 0
    for key in client.scan_iter(match="*}", count=1000):
        if b"{" not in key:
            continue
        status = client.hget(key, "status")
        if status is None:
            continue
        acts = key + b":acts"
        size = int(client.memory_usage(key, samples=0) or 0) + int(client.memory_usage(acts, samples=0) or 0)
        by_status[status.decode()].append(size)
        seen += 1
        if seen >= sample * 3:
            break
    return {status: {"instances_sampled": len(sizes), "bytes_median": int(statistics.median(sizes))}
            for status, sizes in by_status.items()}
