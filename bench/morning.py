"""The morning run at scale: the daily rebalance of N seeded accounts on the real worker fleets.

Per size N, in a sandbox of its own on the shared Redis (:mod:`bench.sandbox`):

1. seed a synthetic book of N accounts (``portfolio_manager.generator``, seeded; ~2 % broken
   on purpose), dated the last session both exchanges traded, its open already past;
2. publish the definitions, start the fleets exactly as ``tradeflow workers`` does with no
   options (one combined solo process per core; ``--fleet`` for others) and beat, and wait until
   every worker answers a ping -- cold: no run before the measured one (``warm=True`` first runs
   a small one, and the figures are then named warm);
3. with the clock started before the call, start the daily rebalance (``start_daily_rebalance``,
   waiting for the open like the real morning: the open is past, so each instance passes its
   wait at once and its first step is sent with it; a morning started before the open pays
   the wake at the open besides, a tick per 500 instances) and follow it until the run is settled;
   with ``open_in`` (``--open-in N``), the run is started before an open N seconds after the
   workers answer, as beat starts the real morning, and the clock (and the CPU meters) run
   from that open: the wake included, the start (before the open) not;
4. figures: accounts/s, steps/s, time to start, to the first and the last proposal, until every
   instance is terminal, counts by status and outcome, and where the time goes per step
   (from a sample of activity records: time in the action, time waiting before it).

Nothing here asserts a time.
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.cpu import CpuMeter, command_delta, command_stats, redis_forks
from bench.memory import MemoryProbe
from bench.sandbox import Sandbox
from engine.api import RunProgress
from engine.connections import masked_url
from engine.definitions.validation import load_definition
from engine.ops.fleet import Fleet, FleetSpec, default_fleets
from engine.ops.inspect import Inspector

TARGET_ACCOUNTS = 20_000
TARGET_SECONDS = 120.0
ACTIVITY_SAMPLE = 300


@dataclass
class MorningOptions:
    """What to run: how many accounts, with which fleets, and how long to wait at most."""

    accounts: int
    seed: int = 7
    fleets: list[FleetSpec] = field(default_factory=default_fleets)
    wait_for_open: bool = True
    warmup: int = 20
    warm: bool = False  # False: cold workers, as a user meets them; True: a small run first (named warm)
    events: bool = False  # the workers' default (TRADEFLOW_EVENTS=0): no task events unless Flower runs
    timeout: float = 3600.0
    solver: str | None = None  # None: the definitions' own (milp); else a version with plan.solver set
    prefetch: int | None = None  # None: the workers' default (TRADEFLOW_PREFETCH, 1)
    #: None: the open is past (each instance passes its wait at once). N: the run is started before an
    #: open N seconds after the workers answer, as beat starts the real morning, and timed from that open.
    open_in: float | None = None
    #: The Redis of the book, the proposals and the brokerage (``TRADEFLOW_PM_REDIS_URL``); None: the engine's.
    pm_redis_url: str | None = None


def run(redis_url: str, options: MorningOptions, console: Console | None = None,
        memory: bool = False) -> dict[str, Any]:
    """Run one morning of ``options.accounts`` accounts; return its figures (and the memory
    breakdown under ``"memory"`` when ``memory``)."""
    from portfolio_manager.cli import last_session
    from portfolio_manager.config import DEFAULT_DEFINITIONS_DIR
    from portfolio_manager.daily import ensure_definitions, start_daily_rebalance
    from portfolio_manager.generator import seed_book

    console = console or Console()
    with Sandbox(redis_url, pm_redis_url=options.pm_redis_url) as sandbox:
        engine, services = sandbox.engine, sandbox.services()
        run_date = last_session()
        summary = seed_book(services.book, options.accounts, options.seed, run_date)
        ensure_definitions(engine, DEFAULT_DEFINITIONS_DIR)
        if options.solver:
            publish_variant(engine, options.solver)
        env = sandbox.env() | ({"TRADEFLOW_PREFETCH": str(options.prefetch)} if options.prefetch else {})
        env["TRADEFLOW_EVENTS"] = "1" if options.events else "0"
        label = f"bench-morning-{options.accounts}"
        figures: dict[str, Any] = {
            "accounts_seeded": summary.count, "seed": options.seed, "run_date": run_date.isoformat(),
            "seed_seconds": round(summary.generate_seconds + summary.write_seconds, 2),
            "fleets": [str(s) for s in options.fleets], "wait_for_open": options.wait_for_open,
            "solver": options.solver or "milp (definitions)", "prefetch": env.get("TRADEFLOW_PREFETCH", "1"),
            "workers": ("warm (a small run first)" if options.warm else "cold (started, answering, no run yet)")
            + ("" if options.open_in is None else f"; started before an open {options.open_in:g} s on, timed from it"),
            "events": options.events, "open_in": options.open_in,
            "book_redis": masked_url(options.pm_redis_url) if options.pm_redis_url else "the engine's",
        }
        probe = MemoryProbe(sandbox.client, sandbox.inspector, label, sandbox.broker_prefix,
                            proposal_key=services.proposals.key,
                            proposals_index=services.proposals.accounts_key(label)) if memory else None
        with Fleet(options.fleets, beat=True, env=env) as fleet:
            figures["workers_ready_seconds"] = wait_until_ready(sandbox, fleet)
            if options.warm:
                _warm_up(engine, services.book, run_date, options, fleet)
            if probe:
                probe.baseline()
            open_at = None if options.open_in is None else publish_variant(  # the solver's version, moved open
                engine, None, time.time() + options.open_in)
            meter = CpuMeter(fleet, sandbox.client, sandbox.pm_client)
            meter.start()
            commands, forks = command_stats(sandbox.client), redis_forks(sandbox.client)
            began, wall = time.monotonic(), time.time()
            started = start_daily_rebalance(engine, services.book, run_date, run=label,
                                            wait_for_open=options.wait_for_open, review_until=_review_until())
            figures["start_seconds"] = round(time.monotonic() - began, 2)
            figures["accounts_started"] = started.total
            took = figures["start_seconds"]
            figures["start_per_s"] = round(started.total / took) if took else None
            if open_at is not None:  # the clock runs from the open, as a real morning's window does
                began, wall = _until(open_at), open_at
                meter.start()
                commands, forks = command_stats(sandbox.client), redis_forks(sandbox.client)
            peak = _PeakMemory(sandbox.client, probe.observe if probe else None)
            progress = _follow(engine, label, began, options.timeout, console, peak.observe)
            figures.update(peak.figures())
            figures["poll_all_terminal_seconds"] = round(time.monotonic() - began, 2)
            figures.update(cpu_figures(meter.stop(), started.total))
            figures["redis_forks"] = redis_forks(sandbox.client) - forks  # AOF rewrites begun in the run
            figures["redis_commands"] = command_delta(commands, command_stats(sandbox.client), started.total)
        figures.update(_outcomes(sandbox, label, wall, progress))
        figures.update(_proposal_times(services.proposals.list(label), wall))
        figures["per_step"] = step_timings(sandbox, label)
        if probe:
            figures["memory"] = probe.finish(started.total)
    return figures


class _PeakMemory:
    """Samples Redis's ``used_memory`` while the run is followed: its peak, and the rise from the start."""

    def __init__(self, client: Any, then: Callable[[RunProgress], None] | None) -> None:
        self.client = client
        self.then = then
        self.start = self.peak = int(client.info("memory")["used_memory"])

    def observe(self, progress: RunProgress) -> None:
        self.peak = max(self.peak, int(self.client.info("memory")["used_memory"]))
        if self.then:
            self.then(progress)

    def figures(self) -> dict[str, Any]:
        return {"redis_used_memory_peak_bytes": self.peak, "redis_used_memory_rise_bytes": self.peak - self.start}


def publish_variant(engine: Any, solver: str | None, open_at: float | None = None) -> float | None:
    """Point ``production`` of both rebalance workflows at a new version of it whose ``plan.solver`` is
    ``solver`` (None: production's as it is) -- what a desk does to trade plan quality for speed
    (docs/performance.md) -- and, with ``open_at`` (epoch seconds), whose ``wait_for_open`` waits
    until then instead of the exchange's open (past in a benchmark). Returns ``open_at``."""
    from portfolio_manager.daily import WORKFLOWS

    for name in WORKFLOWS.values():
        document = json.loads(engine.definition(name, "production").to_json())
        document.pop("version", None)
        if solver:
            document["parameters"]["plan"]["solver"] = solver
        if open_at is not None:
            moment = datetime.fromtimestamp(open_at, UTC).isoformat()
            document["nodes"]["wait_for_open"]["until"] = f"timestamp('{moment}')"
        engine.publish(load_definition(json.dumps(document), f"{name} (solver {solver}, open {open_at})"),
                       alias="production")
    return open_at


def _until(moment: float) -> float:
    """Sleep until epoch second ``moment``; the monotonic clock's reading at that moment."""
    delay = moment - time.time()
    if delay < 0:
        raise RuntimeError(f"the run was still starting {-delay:.1f} s after the open: give --open-in more seconds")
    time.sleep(delay)
    return time.monotonic()


def wait_until_ready(sandbox: Sandbox, fleet: Fleet, timeout: float = 180.0) -> float:
    """Seconds until every worker of ``fleet`` answers a ping (started and consuming, nothing run yet)."""
    began = time.monotonic()
    app = sandbox.engine_app()
    # A connection of its own, closed after: a pooled one would be closed again in forked
    # processes (the peer's pool), blocking them on the pidbox's reply channel.
    with app.connection() as connection:
        while time.monotonic() - began < timeout:
            if len(app.control.ping(timeout=1.0, connection=connection) or []) >= len(fleet.specs):
                return round(time.monotonic() - began, 1)
    logs = "\n".join(p.read_text()[-2000:] for p in fleet.logdir.glob("*.log"))
    raise RuntimeError(f"workers not answering after {timeout:.0f} s; their logs:\n{logs}")


def _warm_up(engine: Any, book: Any, run_date: Any, options: MorningOptions, fleet: Fleet) -> None:
    """A few accounts first, so that worker start-up (imports, forks, first connections) is not measured."""
    from portfolio_manager.daily import start_daily_rebalance

    warm = start_daily_rebalance(engine, book, run_date, run="bench-warmup", limit=options.warmup,
                                 wait_for_open=options.wait_for_open, review_until=_review_until())
    progress = engine.wait_for_run(warm.run, timeout=300, poll=0.2, settled=True)
    if not progress.settled:
        logs = "\n".join(p.read_text()[-2000:] for p in fleet.logdir.glob("*.log"))
        raise RuntimeError(f"warm-up run not finished after 300 s ({progress.counts}); worker logs:\n{logs}")


def _review_until() -> Any:
    """The review's deadline of a benchmark run: a day away (the morning's work ends at the review)."""
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(days=1)


def _follow(engine: Any, run: str, began: float, timeout: float, console: Console,
            observe: Callable[[RunProgress], None] | None) -> RunProgress:
    """Draw the run's progress until it is planned: every instance terminal or awaiting review (or ``timeout``)."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[counts]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(run, total=None, counts="")
        while True:
            progress = engine.progress(run)
            counts = " ".join(f"{k} {v}" for k, v in progress.counts.items() if v)
            bar.update(task, total=progress.total, completed=progress.finished + progress.awaiting, counts=counts)
            if observe:
                observe(progress)
            if progress.settled:
                return progress
            if time.monotonic() - began > timeout:
                console.print(f"[red]timeout after {timeout:.0f} s: {counts}")
                return progress
            time.sleep(0.25)


def _outcomes(sandbox: Sandbox, run: str, wall: float, progress: RunProgress) -> dict[str, Any]:
    """Counts by status and outcome, steps applied and activity records, from every instance."""
    ids = sandbox.inspector.run_ids(run)
    pipe = sandbox.client.pipeline(transaction=False)
    for iid in ids:
        pipe.hmget(sandbox.inspector.instance(iid), "seq", "status", "finished_at", "result", "error", "updated_at")
        pipe.llen(sandbox.inspector.activities(iid))
    replies = pipe.execute()
    steps, records, last = 0, 0, 0.0
    outcomes: collections.Counter[str] = collections.Counter()
    failures: collections.Counter[str] = collections.Counter()
    for (seq, status, finished_at, result, error, updated_at), length in zip(replies[0::2], replies[1::2],
                                                                              strict=True):
        steps += int(seq or 1) - 1
        records += int(length)
        if finished_at:
            last = max(last, float(finished_at))
        elif status == b"awaiting" and updated_at:  # planned: its proposal awaits review
            last = max(last, float(updated_at))
        if status == b"succeeded":
            outcomes[(json.loads(Inspector.decode(result)) if result else {}).get("outcome", "?")] += 1
        elif status == b"failed":
            reason = (json.loads(Inspector.decode(error)) if error else {}).get("type")
            failures[reason or (json.loads(Inspector.decode(result)) if result else {}).get("outcome", "?")] += 1
    elapsed = last - wall if last else float("nan")
    started = progress.total
    return {"counts": {k: v for k, v in progress.counts.items() if v}, "outcomes": dict(outcomes),
            "failed_by_type": dict(failures), "timeout_failures": failures.get("Timeout", 0),
            "steps_applied": steps, "activity_records": records, "all_terminal_seconds": round(elapsed, 2),
            "accounts_per_s": round(started / elapsed, 1) if last else None,
            "steps_per_s": round(steps / elapsed, 1) if last else None,
            "seconds_per_1000_accounts": round(elapsed / started * 1000, 2) if last and started else None}


def _proposal_times(proposals: list[Any], wall: float) -> dict[str, Any]:
    """Seconds from the start of the run to the first and to the last proposal recorded."""
    times = sorted(p.recorded_at for p in proposals if p.recorded_at)
    return {"proposals": len(proposals), "orders_proposed": sum(len(p.orders) for p in proposals),
            "first_proposal_seconds": round(times[0] - wall, 2) if times else None,
            "last_proposal_seconds": round(times[-1] - wall, 2) if times else None}


def step_timings(sandbox: Sandbox, run: str, sample: int = ACTIVITY_SAMPLE) -> dict[str, dict[str, float]]:
    """Per node, from the activity records of a sample of the run's instances: median and p95 of
    the time in the step (``ended_at - started_at``) and of the wait before it (since the
    previous record ended: queueing, the timer tick, the broker)."""
    every = sandbox.inspector.run_ids(run)
    ids = every[:: max(1, len(every) // sample)][:sample]
    pipe = sandbox.client.pipeline(transaction=False)
    for iid in ids:
        pipe.lrange(sandbox.inspector.activities(iid), 0, -1)
    busy: dict[str, list[float]] = collections.defaultdict(list)
    queued: dict[str, list[float]] = collections.defaultdict(list)
    for raw in pipe.execute():
        records = Inspector.decode_activities(raw)
        for previous, record in zip([None, *records], records, strict=False):
            node = str(record.get("node"))
            busy[node].append(record["ended_at"] - record["started_at"])
            if previous is not None:
                queued[node].append(record["started_at"] - previous["ended_at"])
    return {node: {"count": len(values), "median_ms": round(statistics.median(values) * 1000, 1),
                   "p95_ms": round(_p95(values) * 1000, 1),
                   "wait_before_median_ms": round(statistics.median(queued[node]) * 1000, 1) if queued[node] else 0.0,
                   "wait_before_p95_ms": round(_p95(queued[node]) * 1000, 1) if queued[node] else 0.0}
            for node, values in busy.items()}


def cpu_figures(seconds: dict[str, float], accounts: int) -> dict[str, Any]:
    """CPU seconds per part, per 1,000 accounts, and the accounts/s the machine's cores would
    allow if nothing but this run used them (cores / CPU seconds per account)."""
    total = sum(seconds.values())
    per_account = total / accounts if accounts else 0.0
    cores = os.cpu_count() or 1
    return {"cpu_seconds": seconds, "cpu_seconds_total": round(total, 2),
            "cpu_ms_per_account": {k: round(v / accounts * 1000, 2) for k, v in seconds.items()} if accounts else {},
            "cpu_ceiling_accounts_per_s": round(cores / per_account, 1) if per_account else None}


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def growth(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How the figures grow with N: per-account time of each size against the smallest."""
    ordered = sorted((r for r in results if r.get("seconds_per_1000_accounts")), key=lambda r: r["accounts_started"])
    if not ordered:
        return []
    base = ordered[0]
    return [{"accounts": r["accounts_started"], "vs_accounts": base["accounts_started"],
             "per_account_time_ratio": round(r["seconds_per_1000_accounts"] / base["seconds_per_1000_accounts"], 2)}
            for r in ordered[1:] if r["accounts_started"] != base["accounts_started"]]  # (--repeat: same size)


def target_estimate(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The 20,000-account target: measured when a run that size exists, else scaled linearly
    (by accounts seeded) from the largest run."""
    done = [r for r in results if r.get("seconds_per_1000_accounts")]
    if not done:
        return None
    exact = [r for r in done if r["accounts_seeded"] == TARGET_ACCOUNTS]
    basis = exact[0] if exact else max(done, key=lambda r: r["accounts_seeded"])
    seconds = basis["all_terminal_seconds"] * TARGET_ACCOUNTS / basis["accounts_seeded"]
    return {"accounts": TARGET_ACCOUNTS, "target_seconds": TARGET_SECONDS, "seconds": round(seconds, 1),
            "measured": bool(exact), "basis_accounts": basis["accounts_seeded"], "met": seconds < TARGET_SECONDS}
