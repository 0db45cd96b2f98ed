"""The engine's own Redis round trips per step and per account, counted in this process.

    .venv/bin/python -m bench.round_trips [--steps 500] [--accounts 200]

Every round trip the engine's code makes to Redis is counted on the client: one command sent
and its reply awaited (``execute_command``), or one pipeline (``execute``), named by the
``state.lua`` operation (``start``, ``advance`` ...) or the command. Counted, in a sandbox on
the Redis at ``TRADEFLOW_REDIS_URL``:

- **delivered**: a 5-step no-op workflow (``bench.engine_overhead``'s), every step its own
  message, run one by one as a worker would (no inline chain, no draining);
- **inline**: the same, a worker running the next steps itself (the whole chain in one delivery);
- **drained**: the same, a message per step on the broker's Redis list, a worker taking the
  queue's waiting steps after a delivered one (``TRADEFLOW_DRAIN_STEPS`` 16);
- **account**: one morning of ``--accounts`` seeded accounts, every service inline as the default
  combined fleet runs them (``bench.capacity``'s recording), per account;
- **account-drained**: the same with the step messages on the broker's Redis lists, each delivery
  draining its queue (16 per delivery) as the default worker does.

Each also prints the wall and CPU milliseconds of this process per step or account (the
counted part, in process: no Celery), and the server's INFO deltas over the counted part (commands by name, scripts'
inside included, and Redis's CPU) per step or account: run it on a Redis of its own
(``redis-server --port 6396 --save ''``) for those to be the benchmark's alone. The account
modes' include the actions' own reads and writes of the book (the sandbox's Redis).

Celery's own round trips (the delivery, the unacked bookkeeping, the ack) are not counted: the
delivered message is handed to the runtime directly. Timer ticks and metrics flushes are
counted where they happen (a tick is shared by every instance it wakes).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from bench.cpu import command_stats, redis_cpu_seconds
from bench.sandbox import Sandbox

#: What the counting client saw: (kind, name) -> round trips.
SEEN: Counter[str] = Counter()


def _name(args: tuple[Any, ...]) -> str:
    """A round trip's name: the state.lua operation of an EVALSHA, else the command."""
    command = str(args[0]).upper()
    if command in ("EVALSHA", "EVAL") and len(args) > 3:
        numkeys = int(args[2])
        try:
            doc = args[3 + numkeys]
            doc = doc.decode() if isinstance(doc, bytes) else str(doc)
            return f"lua:{json.loads(doc)['op']}"
        except (ValueError, KeyError, TypeError, IndexError):
            return "lua:other"
    return command


class CountingRedis(redis.Redis):
    """A Redis client that counts its round trips (commands and pipelines) in :data:`SEEN`."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Count one round trip, then run the command."""
        SEEN[_name(args)] += 1
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        """A pipeline whose ``execute`` counts as one round trip."""
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def counted(raise_on_error: bool = True) -> Any:
            names = Counter(_name(args) for args, _ in pipe.command_stack)
            SEEN["pipeline(" + ",".join(sorted(names)) + ")"] += 1
            return execute(raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


@contextmanager
def counting(client: redis.Redis | None = None) -> Iterator[Counter[str]]:
    """The round trips made inside the block; with ``client``, the server's INFO deltas over it too
    (``SERVER`` ["commands"]: calls by command, inside scripts included; ["cpu_ms"]: Redis's CPU)."""
    SEEN.clear()
    seen: Counter[str] = Counter()
    if client is not None:
        stats, cpu = command_stats(client), redis_cpu_seconds(client)
    wall, own = time.perf_counter(), time.process_time()
    yield seen
    SERVER["wall_ms"], SERVER["own_cpu_ms"] = (time.perf_counter() - wall) * 1000, (time.process_time() - own) * 1000
    seen.update(SEEN)
    if client is not None:
        after = command_stats(client)
        SERVER["cpu_ms"] = (redis_cpu_seconds(client) - cpu) * 1000
        SERVER["commands"] = {name: calls - stats.get(name, (0, 0.0))[0] for name, (calls, _) in after.items()
                              if calls > stats.get(name, (0, 0.0))[0] and name != "info" and not name.startswith("~")}


#: What the server did over the last :func:`counting` block given a client.
SERVER: dict[str, Any] = {}


def _server(per: int) -> dict[str, Any]:
    """The server's deltas of the last counted block, per ``per`` (a step or an account): on a Redis of
    the benchmark's own, the engine's; on a shared one, everyone's."""
    commands = SERVER.get("commands", {})
    return {"wall_ms": round(SERVER["wall_ms"] / per, 4), "process_cpu_ms": round(SERVER["own_cpu_ms"] / per, 4),
            "redis_commands": round(sum(commands.values()) / per, 2),
            "redis_cpu_ms": round(SERVER.get("cpu_ms", 0.0) / per, 4),
            "redis_commands_by_name": {k: round(v / per, 2)
                                       for k, v in sorted(commands.items(), key=lambda kv: -kv[1])}}


def _noop_run(redis_url: str, steps: int, mode: str) -> dict[str, Any]:
    """Round trips per step of the 5-step no-op workflow run ``mode`` (delivered, inline, drained)."""
    from bench.engine_overhead import STEPS, _definition
    from engine.app import sender_app
    from engine.broker import MemoryEnqueuer, RedisQueueEnqueuer, StepMessage
    from engine.definitions.nodes import Node, ServiceNode, StepNode
    from engine.definitions.validation import load_definition
    from engine.service import Transition
    from engine.testing import drain_queues, runtime_of

    with Sandbox(redis_url) as sandbox:
        client = CountingRedis.from_url(redis_url)
        store = type(sandbox.store)(client, sandbox.store.keys, sandbox.store.retention_seconds)
        from engine.api import Engine
        if mode == "drained":
            app = sender_app(redis_url, sandbox.broker_prefix, "bench")
            enqueuer: Any = RedisQueueEnqueuer.for_app(app, client)
        else:
            enqueuer = MemoryEnqueuer()
        engine = Engine(store, enqueuer)
        engine.publish(load_definition(_definition()))
        runtime = runtime_of(engine)
        if mode == "drained":
            drain_queues(engine, 16)

        def execute(node: StepNode, payload: Any) -> Transition:
            return Transition("ok", {})

        def same(node: Node) -> bool:
            return isinstance(node, ServiceNode)

        inline: Callable[[Node], bool] | None = same if mode == "inline" else None
        n = max(1, steps // STEPS)
        engine.start_many("bench-noop", [{} for _ in range(n)], run="rt")
        with counting(sandbox.client) as seen:
            ran = 0
            if mode == "drained":
                taker = enqueuer
                while True:
                    taken = taker.take("bench", 1)  # the delivered message (Celery's BRPOP)
                    if not taken:
                        break
                    step = taken[0].step
                    assert step is not None
                    runtime.run_step(*step, execute, inline)
                    ran += 1
                    ran += runtime.after_delivery("bench", lambda task: task == "bench.noop", execute, inline)
                    runtime.drain.wake()  # a bench: the queue is refilled at once
            else:
                while enqueuer.messages:
                    message: StepMessage = enqueuer.pop()
                    runtime.run_step(message.instance_id, message.node, message.seq, message.attempt,
                                     execute, inline)
                    ran += 1
        done = sandbox.store.run_counts("rt") if hasattr(sandbox.store, "run_counts") else {}
        client.close()
    total = sum(seen.values())
    return {"mode": mode, "instances": n, "steps": n * STEPS, "deliveries": ran,
            "round_trips_per_step": total / (n * STEPS), "by_name_per_step":
            {k: round(v / (n * STEPS), 3) for k, v in seen.most_common()}, "counts": done, **_server(n * STEPS)}


def _account_run(redis_url: str, accounts: int, drained: bool = False) -> dict[str, Any]:
    """Round trips per account of one morning, every service inline (the default combined fleet);
    ``drained``: the step messages on the broker's Redis lists, each delivery draining its queue."""
    import order_calc.actions  # noqa: F401  (registers plan_orders)
    import portfolio_manager.actions  # noqa: F401
    from engine.api import Engine
    from engine.broker import MemoryEnqueuer
    from engine.service import registry
    from engine.testing import Driver, drain_queues, inline_rule, runtime_of
    from portfolio_manager.cli import last_session
    from portfolio_manager.config import DEFAULT_DEFINITIONS_DIR
    from portfolio_manager.daily import ensure_definitions, start_daily_rebalance
    from portfolio_manager.generator import seed_book
    from portfolio_manager.services import use_services

    with Sandbox(redis_url) as sandbox:
        client = CountingRedis.from_url(redis_url)
        store = type(sandbox.store)(client, sandbox.store.keys, sandbox.store.retention_seconds)
        if drained:
            from engine.app import sender_app
            from engine.broker import RedisQueueEnqueuer
            enqueuer: Any = RedisQueueEnqueuer.for_app(sender_app(redis_url, sandbox.broker_prefix, "rt"), client)
        else:
            enqueuer = MemoryEnqueuer()
        engine = Engine(store, enqueuer)
        if drained:
            drain_queues(engine, 16)
        services = sandbox.services()
        use_services(services)
        ensure_definitions(engine, DEFAULT_DEFINITIONS_DIR)
        run_date = last_session()
        seed_book(services.book, accounts, 7, run_date)
        with counting(sandbox.client) as seen:
            started = start_daily_rebalance(engine, services.book, run_date, run="rt", wait_for_open=True,
                                            review_until=datetime.now(UTC) + timedelta(days=1))
            driver = Driver(engine, inline=True) if not drained else None

            def execute(node: Any, payload: Any) -> Any:
                return registry.get(node.service, node.action).call(payload)

            runtime = runtime_of(engine)

            # the default combined fleet's rule: every service's steps inline, the reads-only ones held
            everything = inline_rule("portfolio_manager", registry, lambda: frozenset({"portfolio_manager",
                                                                                      "order_calc"}))

            while drained:
                runtime.tick()
                ran = 0
                for queue in ("portfolio_manager", "order_calc"):
                    while taken := enqueuer.take(queue, 1):  # a delivery (Celery's BRPOP, not counted)
                        SEEN["lua:other"] -= 1
                        assert taken[0].step is not None
                        runtime.run_step(*taken[0].step, execute, everything)
                        runtime.after_delivery(queue, lambda task: ":" not in task, execute, everything)
                        runtime.drain.wake()  # a bench: the next delivery comes at once
                        ran += 1
                if not ran:
                    break
            while not drained:
                runtime.tick()
                if driver is None or not driver.queue.messages:
                    break
                while driver is not None and driver.queue.messages:
                    message = driver.queue.pop()
                    runtime.run_step(message.instance_id, message.node, message.seq, message.attempt,
                                     execute, everything)
        client.close()
    n = started.total
    engine_names = {k: v for k, v in seen.items() if k.startswith(("lua:", "pipeline(lua", "EVALSHA"))}
    return {"accounts": n, "round_trips_per_account": round(sum(seen.values()) / n, 2),
            "state_lua_per_account": round(sum(engine_names.values()) / n, 2),
            "by_name_per_account": {k: round(v / n, 3) for k, v in seen.most_common()}, **_server(n)}


def main(argv: list[str] | None = None) -> None:
    """Print the round trips of each mode as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--only", default="delivered,inline,drained,account,account-drained")
    args = parser.parse_args(argv)
    url = os.environ.get("TRADEFLOW_REDIS_URL", "redis://127.0.0.1:6379/0")
    for mode in args.only.split(","):
        if mode.startswith("account"):
            result = _account_run(url, args.accounts, drained=mode == "account-drained")
        else:
            result = _noop_run(url, args.steps, mode)
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
