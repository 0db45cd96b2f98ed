"""Where each CPU millisecond of one account's morning goes, in this process: the engine against the peer.

    .venv/bin/python -m bench.profile_account --accounts 500 [--repeat 5] [--no-profile] [--inline all]
        [--solver greedy] [--dump PREFIX]

In a sandbox of its own (:mod:`bench.sandbox`) on the Redis at ``TRADEFLOW_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``), one book of ``--accounts`` seeded accounts (``seed_book``, as the
morning benchmark), and on it, in turn:

- **peer**: :func:`bench.peer.plan_account` for every active account, one after the other in
  this process (initialised like a pool process of the peer): book reads, the order
  calculation's request, the plan, the proposal;
- **engine**: the daily rebalance of the same accounts started with ``wait_for_open=False``
  (the start itself is not measured: it is not the workers' work), its steps run in this
  process by :class:`engine.testing.Driver` (``inline``: a worker of a service runs the same
  service's next step itself; ``--inline all``: one fleet hosting every service, the whole
  chain in one task) on the real Redis, until every instance awaits review or has ended.

Each side runs unprofiled (its CPU time per account: ``time.process_time``, the figure to
compare before and after a change; ``--repeat`` passes, peer and engine alternately, each on
fresh instances, medians printed) and then once under cProfile with ``time.process_time`` as the
timer (where the time goes; cProfile's own overhead inflates the profiled figures, most where
calls are many and short: about a microsecond per call, estimated from both sides and taken
off each function's self time). Printed: CPU ms per account of each side, Redis's (whole
server, shared, so an upper bound), the engine-minus-peer difference by group of functions
(self time, by module; generic built-ins such as ``isinstance`` count where they were called
from), the cumulative time of the steps' parts, and the 25 functions with the most self time
that the peer's profile does not have. ``--solver greedy`` makes the work both sides share
(the MILP) small, so that the engine's own cost stands out of the machine's noise. Every key
of the sandbox is deleted after.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import redis

from bench import peer
from bench.sandbox import Sandbox
from engine.testing import runtime_of

#: Accounts run (unmeasured) by each side first: imports, caches, connections, compiled expressions.
WARMUP = 20
TOP = 25

GENERIC = "other built-ins"
#: (group, test on the function's file, test on its name); the first that matches wins.
#: Built-in functions (file "~") are told apart by their name only.
GROUPS: list[tuple[str, Callable[[str], bool], Callable[[str], bool]]] = [
    ("engine.store codec (JSON/zlib of documents)", lambda f: f.endswith("engine/store/codec.py"), lambda n: True),
    ("engine.store", lambda f: "/engine/store/" in f, lambda n: True),
    ("engine.runtime", lambda f: "/engine/runtime/" in f, lambda n: True),
    ("engine.expressions", lambda f: "/engine/expressions/" in f, lambda n: True),
    ("engine.service (action wrapper)", lambda f: f.endswith("engine/service.py"), lambda n: True),
    ("engine.instance (records, instance)", lambda f: f.endswith("engine/instance.py"), lambda n: True),
    ("engine (other)", lambda f: "/engine/" in f and "site-packages" not in f, lambda n: True),
    ("pm actions (portfolio_manager.actions)", lambda f: f.endswith("portfolio_manager/actions.py"), lambda n: True),
    ("order_calc.actions", lambda f: f.endswith("order_calc/actions.py"), lambda n: True),
    ("portfolio_manager", lambda f: "/portfolio_manager/" in f, lambda n: True),
    ("order_calc", lambda f: "/order_calc/" in f and "site-packages" not in f, lambda n: True),
    ("scipy/numpy/HiGHS", lambda f: "/scipy/" in f or "/numpy/" in f, lambda n: True),
    ("scipy/numpy/HiGHS", lambda f: f == "~", lambda n: "numpy" in n or "scipy" in n or "_highs" in n
     or "ndarray" in n),
    ("pydantic", lambda f: "/pydantic" in f, lambda n: True),
    ("pydantic", lambda f: f == "~", lambda n: "pydantic" in n or "SchemaValidator" in n or "SchemaSerializer" in n),
    ("redis client", lambda f: "/redis/" in f, lambda n: True),
    ("socket I/O", lambda f: f == "~" or "/socket.py" in f or "selectors.py" in f,
     lambda n: "socket" in n or "select" in n or "poll" in n),
    ("json/zlib", lambda f: "/json/" in f, lambda n: True),
    ("json/zlib", lambda f: f == "~", lambda n: "zlib" in n or "_json" in n or "json" in n),
    ("cel (Rust)", lambda f: "/cel/" in f, lambda n: True),
    ("cel (Rust)", lambda f: f == "~", lambda n: "cel." in n or "builtins.Context" in n or "Program" in n),
    ("bench/peer driver", lambda f: "/bench/" in f, lambda n: True),
]


def group_of(filename: str, name: str) -> str:
    """The group a profiled function counts in (see :data:`GROUPS`)."""
    for group, by_file, by_name in GROUPS:
        if by_file(filename) and by_name(name):
            return group
    if filename == "~":
        return GENERIC
    return "stdlib/other" if "site-packages" not in filename else "other packages"


@dataclass
class Side:
    """One side's measurements: unprofiled CPU ms per account (one per repeat) and its profile."""

    name: str
    accounts: int = 0
    cpu_ms: list[float] = field(default_factory=list)
    redis_ms: list[float] = field(default_factory=list)
    profile: pstats.Stats | None = None
    profiled_ms: float = 0.0

    def calls(self) -> int:
        """Function calls of the profiled pass."""
        return int(self.profile.total_calls) if self.profile is not None else 0  # type: ignore[attr-defined]

    def overhead(self, unprofiled_ms: float) -> float:
        """Seconds the profiler added per call: its pass against ``unprofiled_ms`` per account."""
        calls = self.calls()
        return max(0.0, (self.profiled_ms - unprofiled_ms) * self.accounts / 1000 / calls) if calls else 0.0

    def groups(self, overhead: float) -> dict[str, float]:
        """Self time per group, ms per account, less ``overhead`` seconds per call (the profiler's own)."""
        out: dict[str, float] = defaultdict(float)
        if self.profile is None:
            return out
        scale = 1000 / self.accounts
        for (filename, _line, name), (_cc, nc, tottime, _ct, callers) in self.profile.stats.items():  # type: ignore[attr-defined]
            group = group_of(filename, name)
            spread = sum(c[1] for c in callers.values()) if group == GENERIC else 0
            if not spread:
                out[group] += (tottime - overhead * nc) * scale
                continue
            # A generic built-in (isinstance, len, dict.get...) counts where it was called from.
            for (c_file, _c_line, c_name), c in callers.items():
                out[group_of(c_file, c_name)] += (c[2] - overhead * c[1]) * scale
        return out

    def cumulative(self, key: tuple[str, int, str]) -> tuple[float, float]:
        """(cumulative ms, calls) per account of the function ``key`` (0 when it was not called)."""
        found = self.profile.stats.get(key) if self.profile is not None else None  # type: ignore[attr-defined]
        if not found:
            return 0.0, 0.0
        return found[3] * 1000 / self.accounts, found[1] / self.accounts


def redis_cpu(client: redis.Redis) -> float:
    """The Redis server's CPU seconds so far (the whole server: other users' too)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(client: redis.Redis, work: Callable[[], int], profile: bool) -> tuple[float, float, Any, int]:
    """Run ``work`` (returns how many accounts it did): (CPU s, Redis CPU s, profiler or None, accounts)."""
    profiler = cProfile.Profile(time.process_time) if profile else None
    server = redis_cpu(client)
    began = time.process_time()
    if profiler is not None:
        profiler.enable()
    try:
        done = work()
    finally:
        if profiler is not None:
            profiler.disable()
    return time.process_time() - began, redis_cpu(client) - server, profiler, done


# --------------------------------------------------------------------------- the two sides


class PeerSide:
    """The plain script's per-account work, in this process."""

    def __init__(self, sandbox: Sandbox, run_date: date, accounts: list[tuple[str, str]],
                 solver: str | None = None) -> None:
        self.sandbox = sandbox
        self.run_date = run_date
        self.accounts = accounts
        self.params = peer.region_parameters(solver)

    def run(self, label: str, accounts: list[tuple[str, str]] | None = None) -> Callable[[], int]:
        """The work of one pass over ``accounts`` (default: all) as run ``label``."""
        chosen = self.accounts if accounts is None else accounts
        peer._init(self.sandbox.redis_url, self.sandbox.pm_prefix, label, self.run_date.isoformat(), self.params)

        def work() -> int:
            for account_id, region in chosen:
                peer.plan_account(account_id, region)
            return len(chosen)

        return work


class EngineSide:
    """The rebalance workflows run by an in-process driver on the sandbox's Redis."""

    def __init__(self, sandbox: Sandbox, run_date: date, inline_all: bool, solver: str | None = None) -> None:
        import order_calc.actions  # noqa: F401  (registers plan_orders)
        import portfolio_manager.actions  # noqa: F401  (registers the portfolio manager's actions)
        from engine.api import Engine
        from engine.broker import MemoryEnqueuer
        from engine.testing import Driver
        from portfolio_manager.config import DEFAULT_DEFINITIONS_DIR
        from portfolio_manager.daily import ensure_definitions
        from portfolio_manager.services import use_services

        self.sandbox = sandbox
        self.run_date = run_date
        self.engine = Engine(sandbox.store, MemoryEnqueuer())
        self.driver = Driver(self.engine, inline=True)
        self.inline_all = inline_all
        self.services = sandbox.services()
        use_services(self.services)
        ensure_definitions(self.engine, DEFAULT_DEFINITIONS_DIR)
        if solver:
            from bench.morning import publish_variant

            publish_variant(self.engine, solver)

    def start(self, label: str, limit: int | None = None) -> int:
        """Start the run ``label`` (not measured); how many instances started."""
        from portfolio_manager.daily import start_daily_rebalance

        review_until = datetime.now(UTC) + timedelta(days=1)
        started = start_daily_rebalance(self.engine, self.services.book, self.run_date, run=label,
                                        wait_for_open=False, review_until=review_until, limit=limit)
        return started.total

    def work(self, count: int) -> Callable[[], int]:
        """Run every queued step (and the steps they chain) until none is left."""
        from engine.runtime.concerns.inline import inline_rule
        from engine.service import registry

        driver, runtime = self.driver, runtime_of(self.engine)
        # one fleet hosting every service (its rule: every service inline, the reads-only steps held)
        everything = inline_rule("portfolio_manager", registry,
                                 lambda: frozenset({"portfolio_manager", "order_calc"}))

        def run() -> int:
            queue = driver.queue
            while queue.messages:
                # The whole list at a time, in priority order (MemoryEnqueuer.pop scans the list on
                # every pop: quadratic in a deep queue, and no worker's cost).
                waiting = sorted(queue.messages, key=lambda item: item[1])
                queue.messages = []
                for message, _priority in waiting:
                    if self.inline_all:
                        runtime.run_step(message.instance_id, message.node, message.seq, message.attempt,
                                         driver.execute, everything)
                    else:
                        driver.deliver(message)
            return count

        return run

    def outcomes(self, label: str) -> dict[str, int]:
        """Instances of run ``label`` by status."""
        return {k: v for k, v in self.engine.progress(label).counts.items() if v}


# --------------------------------------------------------------------------- the report


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(peer_side: Side, engine_side: Side, out: Any = sys.stdout) -> None:
    """Print the figures (see the module docstring)."""
    w = out.write
    w(f"\nCPU ms per account, unprofiled (median of {len(engine_side.cpu_ms)}; "
      f"all: {_fmt(peer_side.cpu_ms)} / {_fmt(engine_side.cpu_ms)})\n")
    pc, ec = _median(peer_side.cpu_ms), _median(engine_side.cpu_ms)
    pr, er = _median(peer_side.redis_ms), _median(engine_side.redis_ms)
    w(f"  {'':34} {'peer':>8} {'engine':>8} {'diff':>8}\n")
    w(f"  {'this process':34} {pc:8.2f} {ec:8.2f} {ec - pc:8.2f}\n")
    w(f"  {'redis-server (whole server)':34} {pr:8.2f} {er:8.2f} {er - pr:8.2f}\n")
    paired = [e - p for p, e in zip(peer_side.cpu_ms, engine_side.cpu_ms, strict=True)]
    w(f"  difference pass by pass: {_fmt(paired)}, median {_median(paired):.2f}\n")
    if peer_side.profile is None or engine_side.profile is None:
        return
    # cProfile adds about the same CPU time to every call: per side, what its profiled pass took
    # more than its unprofiled ones, per call; taken off each function's self time (so that the
    # groups add up to the unprofiled figure; a group of many tiny calls can come out negative).
    p_over, e_over = peer_side.overhead(pc), engine_side.overhead(ec)
    w(f"\nProfiled (cProfile, process_time): peer {peer_side.profiled_ms:.2f}, engine {engine_side.profiled_ms:.2f} "
      f"ms per account; calls per account: peer {peer_side.calls() / peer_side.accounts:.0f}, engine "
      f"{engine_side.calls() / engine_side.accounts:.0f}; the profiler's own cost, {p_over * 1e6:.2f} / "
      f"{e_over * 1e6:.2f} us per call, is taken off each function's self time below.\n")
    pg, eg = peer_side.groups(p_over), engine_side.groups(e_over)
    overhead = e_over
    names = sorted(set(pg) | set(eg), key=lambda g: -(eg.get(g, 0.0) - pg.get(g, 0.0)))
    w(f"\n  {'self time by group, ms per account':44} {'peer':>8} {'engine':>8} {'diff':>8}\n")
    for name in names:
        p, e = pg.get(name, 0.0), eg.get(name, 0.0)
        if max(abs(p), abs(e)) < 0.005:
            continue
        w(f"  {name:44} {p:8.3f} {e:8.3f} {e - p:8.3f}\n")
    w(f"  {'total':44} {sum(pg.values()):8.3f} {sum(eg.values()):8.3f} {sum(eg.values()) - sum(pg.values()):8.3f}\n")
    w(f"\n  {'cumulative (profiled, overhead in), ms per account (calls)':60} {'peer':>14} {'engine':>14}\n")
    for label, key in phases():
        (p, pn), (e, en) = peer_side.cumulative(key), engine_side.cumulative(key)
        if max(p, e) < 0.005:
            continue
        w(f"  {label:60} {p:7.3f} ({pn:4.1f}) {e:7.3f} ({en:4.1f})\n")
    peer_keys = set(peer_side.profile.stats)  # type: ignore[attr-defined]
    rows = [(key, value) for key, value in engine_side.profile.stats.items()  # type: ignore[attr-defined]
            if key not in peer_keys]
    rows.sort(key=lambda kv: -(kv[1][2] - overhead * kv[1][1]))
    w(f"\nTop {TOP} functions by self time (less the profiler's) that the peer's profile does not have "
      "(ms per account; cumtime as profiled):\n")
    w(f"  {'tottime':>8} {'cumtime':>8} {'calls/acct':>10}  function\n")
    per = 1000 / engine_side.accounts
    for (filename, line, name), (_cc, nc, tottime, cumtime, _callers) in rows[:TOP]:
        label = f"{_short(filename)}:{line}({name})" if filename != "~" else name
        w(f"  {max(0.0, tottime - overhead * nc) * per:8.3f} {cumtime * per:8.3f} {nc / engine_side.accounts:10.1f}"
          f"  {label}\n")


def phases() -> list[tuple[str, tuple[str, int, str]]]:
    """Functions whose cumulative time says where a step's work goes: (label, profile key)."""
    from engine.expressions.cel import Template
    from engine.instance import Activity, Instance
    from engine.runtime.runner import Runtime
    from engine.service import ActionSpec, as_transition
    from engine.store import codec
    from engine.store.instances import Instances
    from order_calc import actions as oc_actions
    from order_calc import plan as oc_plan
    from portfolio_manager import actions as pm_actions
    from portfolio_manager import order_request, proposals
    from portfolio_manager.redis_book import RedisBook

    chosen = [
        ("Runtime.run_step (every step)", Runtime.run_step),
        ("  store.start (read the instance)", Instances.start),
        ("    Instance.from_hash", Instance.from_hash),
        ("    codec.decode_instance_hash", codec.decode_instance_hash),
        ("  Template.evaluate (step input)", Template.evaluate),
        ("  Runtime.scope", Runtime.scope),
        ("  ActionSpec.call (action + wrapper)", ActionSpec.call),
        ("    as_transition (check of the answer)", as_transition),
        ("    pm fetch_holdings", pm_actions.fetch_holdings),
        ("    pm fetch_target", pm_actions.fetch_target),
        ("    order_calc plan_orders action", oc_actions.plan_orders),
        ("    pm record_proposal", pm_actions.record_proposal),
        ("  Runtime._advance", Runtime._advance),
        ("    Runtime.resolve (next node)", Runtime.resolve),
        ("    Runtime.activity", Runtime.activity),
        ("    Activity.to_dict", Activity.to_dict),
        ("    store.advance", Instances.advance),
        ("      codec.pack", codec.pack),
        ("      Instances._change", Instances._change),
        ("      Instances._call", Instances._call),
        ("RedisBook.get_holdings", RedisBook.get_holdings),
        ("RedisBook.get_model", RedisBook.get_model),
        ("RedisBook.get_prices", RedisBook.get_prices),
        ("build_plan_request", order_request.build_plan_request),
        ("order_calc.plan.plan_orders", oc_plan.plan_orders),
        ("proposal_from_plan", proposals.proposal_from_plan),
        ("ProposalStore.record", proposals.ProposalStore.record),
    ]
    out = []
    for label, fn in chosen:
        code = getattr(fn, "__wrapped__", fn).__code__
        out.append((label, (code.co_filename, code.co_firstlineno, code.co_name)))
    return out


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/wt/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# --------------------------------------------------------------------------- main


@dataclass(frozen=True)
class Options:
    """What to measure: book size and seed, passes, profiling, inline rule and solver."""

    accounts: int = 500
    seed: int = 7
    repeat: int = 1
    profile: bool = True
    inline_all: bool = False
    solver: str | None = None
    dump: str | None = None


def run(redis_url: str, options: Options) -> tuple[Side, Side]:
    """Seed, warm both sides up, measure them (``repeat`` times unprofiled, then once profiled)."""
    from portfolio_manager.cli import last_session
    from portfolio_manager.generator import seed_book

    with Sandbox(redis_url) as sandbox:
        services = sandbox.services()
        run_date = last_session()
        seed_book(services.book, options.accounts, options.seed, run_date)
        active = [(a.id, a.region.value) for a in services.book.list_accounts(active_only=True, invalid={})]
        peer_runner = PeerSide(sandbox, run_date, active, options.solver)
        engine_runner = EngineSide(sandbox, run_date, options.inline_all, options.solver)
        peer_runner.run("warmup-peer", active[:WARMUP])()
        engine_runner.work(engine_runner.start("warmup-engine", WARMUP))()
        peer_side, engine_side = Side("peer"), Side("engine")
        client = sandbox.client
        for i in range(options.repeat):
            cpu, server, _, done = measure(client, peer_runner.run(f"peer-{i}"), False)
            peer_side.cpu_ms.append(cpu * 1000 / done)
            peer_side.redis_ms.append(server * 1000 / done)
            peer_side.accounts = done
            count = engine_runner.start(f"engine-{i}")
            cpu, server, _, done = measure(client, engine_runner.work(count), False)
            engine_side.cpu_ms.append(cpu * 1000 / done)
            engine_side.redis_ms.append(server * 1000 / done)
            engine_side.accounts = done
            if i == 0:
                print(f"engine run: {engine_runner.outcomes(f'engine-{i}')}", flush=True)
            p, e = peer_side.cpu_ms[-1], engine_side.cpu_ms[-1]
            print(f"pass {i + 1}/{options.repeat}: peer {p:.2f}, engine {e:.2f}, difference {e - p:.2f} "
                  "CPU ms per account", flush=True)
        if options.profile:
            cpu, _, profiler, done = measure(client, peer_runner.run("peer-profiled"), True)
            peer_side.profile, peer_side.profiled_ms = pstats.Stats(profiler), cpu * 1000 / done
            count = engine_runner.start("engine-profiled")
            cpu, _, profiler, done = measure(client, engine_runner.work(count), True)
            engine_side.profile, engine_side.profiled_ms = pstats.Stats(profiler), cpu * 1000 / done
            if options.dump:
                peer_side.profile.dump_stats(f"{options.dump}.peer.prof")
                engine_side.profile.dump_stats(f"{options.dump}.engine.prof")
        return peer_side, engine_side


def main(argv: list[str] | None = None) -> None:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile_account", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=500, help="book size (default 500)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic book (default 7)")
    parser.add_argument("--repeat", type=int, default=1, help="unprofiled passes of each side (default 1)")
    parser.add_argument("--no-profile", action="store_true", help="only the unprofiled CPU figures")
    parser.add_argument("--inline", choices=["service", "all"], default="service",
                        help="steps run without a broker hop: the same service's (default) or every service's")
    parser.add_argument("--solver", choices=["milp", "greedy"],
                        help="plan.solver of both sides (default: the definitions' own, milp); greedy makes the "
                             "shared work small, so the engine's own cost stands out of the noise")
    parser.add_argument("--dump", metavar="PREFIX", help="write the profiles to PREFIX.peer.prof, PREFIX.engine.prof")
    parser.add_argument("--redis-url", default=os.environ.get("TRADEFLOW_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args(argv)
    options = Options(accounts=args.accounts, seed=args.seed, repeat=max(1, args.repeat), profile=not args.no_profile,
                      inline_all=args.inline == "all", solver=args.solver, dump=args.dump)
    peer_side, engine_side = run(args.redis_url, options)
    report(peer_side, engine_side)


if __name__ == "__main__":
    main()
