"""``make bench``: the benchmarks, a table on the terminal and JSON under bench/results/.

With no options: the engine overhead against bare Celery, then the morning run of 20,000
accounts with the default layout (``tradeflow workers`` with no options, cold: started, no run
before) and the MILP then the greedy solver, each against the plain-script peer, then one
Redis's ceiling (``bench.capacity``: the engine's Redis operations replayed on a private
redis-server), then Redis memory per instance (measured on the morning run), then the
submission phase of 20,000 approved accounts per account and in block orders (tickets, time),
then starting 20,000 instances alone (``start_many``, then the daily start; no workers). A
summary of the headline figures ends the run.
Every benchmark uses a key and queue prefix of its own on the Redis at TRADEFLOW_REDIS_URL
(an embedded one when none answers) and deletes its keys after. Nothing asserts a time: the
figures are what this machine did, with whatever else was running on it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from bench import blocks, capacity, engine_overhead, morning, peer, replica_wait, start
from engine.config import Settings
from engine.connections import state_url
from engine.ops.fleet import FleetSpec, default_fleets

BENCHMARKS = ("engine", "morning", "capacity", "memory", "submission", "start")
RESULTS = Path(__file__).parent / "results"
FULL_ACCOUNTS = 100_000


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give counts separated by commas, e.g. 1000,10000") from None
    if not sizes or any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: every count must be a positive integer")
    return sizes


def _solvers(text: str) -> list[str]:
    solvers = [part.strip() for part in text.split(",") if part.strip()]
    if not solvers or any(s not in ("milp", "greedy") for s in solvers):
        raise argparse.ArgumentTypeError(f"{text!r}: give milp, greedy or both separated by a comma")
    return solvers


def _fleet(text: str) -> FleetSpec:
    try:
        spec = FleetSpec.parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use queue[:pool[:n]], e.g. order_calc:prefork:2") from None
    if spec.pool not in {"threads", "prefork", "solo", "gevent", "eventlet"} or spec.concurrency < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown pool or concurrency below 1")
    return spec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--help`` lists every option)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=BENCHMARKS,
                        metavar="{engine,morning,capacity,memory,submission,start}",
                        help="run only this benchmark (repeatable; default: all six, in that order)")
    engine = parser.add_argument_group("engine overhead")
    engine.add_argument("--steps", type=int, default=5000, help="steps per measurement (default 5000)")
    engine.add_argument("--pool", default=None,
                        help="worker pool of the bench queue (default: none, the layout tradeflow workers starts: "
                             "one solo process per core on every queue)")
    engine.add_argument("--concurrency", type=int, default=2, help="with --pool: its concurrency (default 2)")
    run = parser.add_argument_group("morning run and memory")
    run.add_argument("--accounts", type=_sizes, default=[20_000], metavar="N[,N...]",
                     help="book sizes of the morning run (default 20000)")
    run.add_argument("--full", action="store_true",
                     help=f"add a {FULL_ACCOUNTS:,}-account morning and measure memory on it (long: tens of minutes)")
    run.add_argument("--memory-accounts", type=int, metavar="N",
                     help="book size the memory is measured on (default: the largest morning size)")
    run.add_argument("--seed", type=int, default=7, help="seed of the synthetic book (default 7)")
    run.add_argument("--no-wait", action="store_true",
                     help="start each instance at once instead of waiting for the (past) open through beat's timer")
    run.add_argument("--fleet", action="append", type=_fleet, metavar="QUEUE[:POOL[:N[:NICE]]]",
                     help="a worker fleet (repeatable; default: " + ", ".join(map(str, default_fleets())) + ")")
    run.add_argument("--solver", type=_solvers, default=["milp", "greedy"], metavar="S[,S]",
                     help="plan.solver of the runs, each size run with each (default milp,greedy; milp is the "
                          "definitions' own)")
    run.add_argument("--warm", action="store_true",
                     help="run 20 accounts before the measured run (figures then named warm; default: cold workers, "
                          "as a user meets them)")
    run.add_argument("--events", action="store_true",
                     help="workers with task events (TRADEFLOW_EVENTS=1, as with Flower running; default: off, as "
                          "tradeflow workers runs)")
    run.add_argument("--prefetch", type=int, metavar="N",
                     help="the workers' prefetch multiplier, TRADEFLOW_PREFETCH (default: theirs, 1)")
    run.add_argument("--open-in", type=float, metavar="SECONDS",
                     help="start each run before an open SECONDS after the workers answer, as beat starts the "
                          "real morning, and time it from that open (the wake at the open included; default: the "
                          "open is past, each instance passes its wait at once and the clock starts with the start)")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for one run (default 3600)")
    run.add_argument("--pm-redis-url", metavar="URL",
                     help="the morning and its peer keep the book, the proposals and the brokerage on this Redis "
                          "(the workers' TRADEFLOW_PM_REDIS_URL), as a deployment that gives the book a Redis of its "
                          "own; each Redis's CPU is reported apart")
    run.add_argument("--repeat", type=int, default=1, metavar="N",
                     help="run each morning and its peer N times, in rounds (default 1): a single "
                          "run's ratio moves by about 0.1 with the machine's load; the even rounds run the peer "
                          "first; the median is printed with every value")
    run.add_argument("--no-peer", action="store_true",
                     help="skip the plain-script peer (a multiprocessing.Pool doing the same work per account, "
                          "no engine) that each morning size is compared with")
    cap = parser.add_argument_group("capacity (one Redis's ceiling)")
    cap.add_argument("--capacity-accounts", type=int, default=20_000, metavar="N",
                     help="accounts whose Redis operations are replayed on a private Redis (default 20000)")
    cap.add_argument("--capacity-clients", type=int, default=4, metavar="N",
                     help="client processes replaying them, pipelined (default 4)")
    submission = parser.add_argument_group("submission phase")
    submission.add_argument("--submission-accounts", type=_sizes, default=[20_000], metavar="N[,N...]",
                            help="approved accounts submitted per account, then in blocks (default 20000)")
    starting = parser.add_argument_group("starting instances")
    starting.add_argument("--start-count", type=int, default=20_000, metavar="N",
                          help="instances started by start_many, and accounts by the daily start (default 20000)")
    starting.add_argument("--no-daily", action="store_true",
                          help="time start_many only (no book seeded, no daily start)")
    args = parser.parse_args(argv)
    if args.full and FULL_ACCOUNTS not in args.accounts:
        args.accounts = [*args.accounts, FULL_ACCOUNTS]
    args.memory_accounts = args.memory_accounts or max(args.accounts)
    args.only = args.only or list(BENCHMARKS)
    return args


def _commit() -> str | None:
    """The checkout's commit, ``+dirty`` when the working tree has changes (figures measure the tree)."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty=+dirty"], cwd=RESULTS.parent, text=True,
                              capture_output=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine(url: str) -> dict[str, Any]:
    """What the figures were measured on, and by which command."""
    try:
        with redis.Redis.from_url(url) as client:
            redis_version = client.info("server").get("redis_version")
    except redis.RedisError:
        redis_version = None
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {"machine": platform.platform(), "cpus": os.cpu_count(), "memory_bytes": memory,
            "python": platform.python_version(), "redis": redis_version,
            "command": "python -m bench " + " ".join(sys.argv[1:]), "commit": _commit(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write(name: str, url: str, figures: dict[str, Any], console: Console) -> Path:
    """``bench/results/<name>.json``: the machine and command, then the figures."""
    out = RESULTS / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({**machine(url), **figures}, indent=2, default=str))
    console.print(f"written to {out}")
    return out


def run_engine(args: argparse.Namespace, url: str, console: Console) -> dict[str, Any]:
    """Engine overhead against bare Celery (``bench.engine_overhead``)."""
    workers = f"pool {args.pool} x{args.concurrency}" if args.pool else "the default layout"
    console.print(f"engine overhead: {args.steps} steps, {workers}, Redis {url}")
    figures = engine_overhead.run(url, args.steps, args.pool, args.concurrency)
    table = Table("measurement", "steps/s", "engine / this", "engine, a message per step / this",
                  "same, queue drained / this", title="engine overhead")
    for label, key, vs in (("bare Celery no-op tasks", "bare_tasks_per_s", "bare"),
                           ("Celery chain of 5", "chain_steps_per_s", "chain")):
        table.add_row(label, f"{figures[key]:.0f}", f"{figures[f'ratio_engine_vs_{vs}']:.2f}",
                      f"{figures[f'ratio_engine_message_vs_{vs}']:.2f}",
                      f"{figures[f'ratio_engine_drained_vs_{vs}']:.2f}")
    table.add_row("engine, a message per step (each delivered by Celery)",
                  f"{figures['engine_message_steps_per_s']:.0f}", "", "", "")
    table.add_row("engine, a message per step, deep queue drained (16 per delivery)",
                  f"{figures['engine_drained_steps_per_s']:.0f}", "", "", "")
    table.add_row("engine (defaults: same-service steps inline, queue drained)",
                  f"{figures['engine_steps_per_s']:.0f}", "", "", "")
    console.print(table)
    write("engine_overhead", url, figures, console)
    steps = min(args.steps, 2000)
    console.print(f"WAIT for a replica after terminal transitions: {steps} steps on a primary with a replica")
    waited = replica_wait.run(steps, args.pool, args.concurrency)
    table = Table("measurement", "without WAIT", "with WAIT 1", title="TRADEFLOW_REDIS_WAIT_REPLICAS=1")
    table.add_row("engine steps/s (5-step instances)", f"{waited['engine_steps_per_s_wait0']:.0f}",
                  f"{waited['engine_steps_per_s_wait1']:.0f} ({waited['ratio_wait1_vs_none']:.2f}x)")
    table.add_row("one write, median", f"{waited['set_median_us']:.0f} us", f"{waited['set_wait1_median_us']:.0f} us")
    console.print(table)
    write("replica_wait", url, waited, console)
    return figures


def _options(args: argparse.Namespace, accounts: int, solver: str = "milp") -> morning.MorningOptions:
    return morning.MorningOptions(accounts=accounts, seed=args.seed, fleets=args.fleet or default_fleets(),
                                  wait_for_open=not args.no_wait, timeout=args.timeout,
                                  solver=None if solver == "milp" else solver, prefetch=args.prefetch,
                                  warm=args.warm, events=args.events, open_in=args.open_in,
                                  pm_redis_url=args.pm_redis_url)


def run_order(attempt: int, no_peer: bool) -> tuple[str, ...]:
    """Which runs a round makes, in order: the engine's morning then the peer's, and the other way
    round in the even rounds of ``--repeat``, so that a machine slowing (or speeding up) through
    the rounds weighs on both sides of the median ratio alike."""
    if no_peer:
        return ("engine",)
    return ("peer", "engine") if attempt % 2 == 0 else ("engine", "peer")


def _engine_morning(args: argparse.Namespace, url: str, console: Console, accounts: int, solver: str,
                    with_memory: bool) -> dict[str, Any]:
    """One morning run of the engine, with the load average at its end."""
    fleets = ", ".join(map(str, args.fleet or default_fleets()))
    console.print(f"morning run: {accounts:,} accounts, {solver}, {'warm' if args.warm else 'cold'} workers "
                  f"({fleets}){' (+ memory)' if with_memory else ''}, Redis {url}, "
                  f"load average {os.getloadavg()[0]:.1f}")
    result = morning.run(url, _options(args, accounts, solver), console, memory=with_memory)
    result["load_average"] = [round(x, 1) for x in os.getloadavg()]
    return result


def _peer_morning(args: argparse.Namespace, url: str, console: Console, accounts: int,
                  solver: str) -> dict[str, Any]:
    """The plain-script peer's run of the same morning."""
    console.print(f"plain-script peer: {accounts:,} accounts, {solver}, multiprocessing.Pool x{os.cpu_count()}")
    return peer.run(url, peer.PeerOptions(accounts, args.seed, None if solver == "milp" else solver,
                                          pm_redis_url=args.pm_redis_url))


def run_morning(args: argparse.Namespace, url: str, console: Console, memory: bool,
                found: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The morning run at each size and solver; returns the memory figures when one run measured
    them (and puts the runs in ``found["morning"]`` for the summary)."""
    results = []
    # with --repeat, the rounds go one after another: each size and solver once per round
    for attempt, accounts, solver in itertools.product(range(1, max(args.repeat, 1) + 1), args.accounts, args.solver):
        with_memory = memory and accounts == args.memory_accounts and solver == args.solver[0] and attempt == 1
        result: dict[str, Any] = {}
        order = run_order(attempt, args.no_peer)
        for side in order:
            if side == "engine":
                result = _engine_morning(args, url, console, accounts, solver, with_memory) | result
            else:
                result["peer"] = _peer_morning(args, url, console, accounts, solver)
        if args.repeat > 1:
            result["attempt"], result["first"] = attempt, order[0]
        if "peer" in result:
            result["peer_ratio"] = peer_ratio(result)
        results.append(result)
    console.print(morning_table(results))
    figures: dict[str, Any] = {"runs": [{k: v for k, v in r.items() if k != "memory"} for r in results],
                               "growth": morning.growth(results), "target": morning.target_estimate(results)}
    for line in _growth_lines(figures):
        console.print(line, highlight=False)
    write("morning", url, figures, console)
    if found is not None:
        found["morning"] = results
    measured = [r["memory"] | {"accounts_seeded": r["accounts_seeded"], "accounts_started": r["accounts_started"]}
                for r in results if "memory" in r]
    return measured[0] if measured else None


def peer_ratio(result: dict[str, Any]) -> float | None:
    """tradeflow's accounts/s divided by the plain-script peer's, on the same book."""
    mine, theirs = result.get("accounts_per_s"), (result.get("peer") or {}).get("accounts_per_s")
    return round(mine / theirs, 3) if mine and theirs else None


#: The peer ratio each solver's morning aims at (greedy: the engine's own cost is most of the work).
PEER_GOALS = {"greedy": 0.6}


def ratio_medians(runs: list[dict[str, Any]]) -> list[str]:
    """For each book size and solver run more than once (``--repeat``): the median peer ratio and every value."""
    ratios: dict[tuple[int, str], list[float]] = {}
    for r in runs:
        if r.get("peer_ratio") is not None:
            ratios.setdefault((r["accounts_seeded"], r["solver"].split()[0]), []).append(r["peer_ratio"])
    return [f"{accounts:,} accounts ({solver}), {len(values)} runs: median {statistics.median(values):.2f} x the "
            f"plain-script peer ({', '.join(f'{v:.2f}' for v in values)})"
            for (accounts, solver), values in ratios.items() if len(values) > 1]


def _growth_lines(figures: dict[str, Any]) -> list[str]:
    lines = [f"per-account time at {g['accounts']:,} accounts = {g['per_account_time_ratio']} x that at "
             f"{g['vs_accounts']:,}" for g in figures["growth"]]
    for r in figures["runs"]:
        if r.get("peer_ratio") is not None:
            lines.append(f"{r['accounts_seeded']:,} accounts ({r['solver']}): tradeflow {r['accounts_per_s']:.0f} "
                         f"accounts/s / plain-script peer {r['peer']['accounts_per_s']:.0f} = "
                         f"{r['peer_ratio']:.2f} (goal >= {PEER_GOALS.get(r['solver'], 0.8)})")
    lines += ratio_medians(figures["runs"])
    target = figures["target"]
    if target:
        how = "measured" if target["measured"] else f"linear from the {target['basis_accounts']:,}-account run"
        verdict = "met" if target["met"] else "missed"
        lines.append(f"target {target['accounts']:,} accounts in < {target['target_seconds']:.0f} s: "
                     f"{target['seconds']:.0f} s ({how}) -> {verdict}")
    return lines


def morning_table(results: list[dict[str, Any]]) -> Table:
    """One column per book size."""
    table = Table("figure", *[f"{r['accounts_seeded']:,} accounts, {r['solver'].split()[0]}"
                              + (f" #{r['attempt']}" if "attempt" in r else "") for r in results],
                  title="morning run (" + (results[0]["workers"] if results else "") + ")")
    rows = [
        ("accounts started", "accounts_started", "{:,}"),
        ("start (create instances), s", "start_seconds", "{:.1f}"),
        ("  instances started per s", "start_per_s", "{:,.0f}"),
        ("first proposal, s", "first_proposal_seconds", "{:.1f}"),
        ("last proposal, s", "last_proposal_seconds", "{:.1f}"),
        ("all terminal, s", "all_terminal_seconds", "{:.1f}"),
        ("accounts/s", "accounts_per_s", "{:.0f}"),
        ("steps applied", "steps_applied", "{:,}"),
        ("steps/s", "steps_per_s", "{:.0f}"),
        ("s per 1,000 accounts", "seconds_per_1000_accounts", "{:.2f}"),
        ("proposals (orders)", None, None),
        ("by status", "counts", None),
        ("succeeded by outcome", "outcomes", None),
        ("failed by error type", "failed_by_type", None),
        ("Timeout failures", "timeout_failures", "{:,}"),
        ("Redis used_memory peak, MiB", "redis_used_memory_peak_bytes", None),
    ]
    for label, key, fmt in rows:
        cells = []
        for r in results:
            if key is None:
                cells.append(f"{r['proposals']:,} ({r['orders_proposed']:,})")
            elif key == "redis_used_memory_peak_bytes":
                cells.append(f"{r[key] / 2**20:,.0f} (+{r['redis_used_memory_rise_bytes'] / 2**20:,.0f} in the run)"
                             if r.get(key) else "-")
            elif fmt is None:
                cells.append(", ".join(f"{k} {v:,}" for k, v in r.get(key, {}).items()))
            else:
                cells.append(fmt.format(r[key]) if r.get(key) is not None else "-")
        table.add_row(label, *cells)
    if any("peer" in r for r in results):
        table.add_row("peer (plain script): accounts/s", *[
            f"{r['peer']['accounts_per_s']:.0f}" if "peer" in r else "-" for r in results])
        table.add_row("peer: CPU ms per account (pool / Redis)", *[
            f"{r['peer']['cpu_ms_per_account']['pool processes']:.1f} / "
            f"{r['peer']['cpu_ms_per_account']['redis-server (whole server)']:.1f}" if "peer" in r else "-"
            for r in results])
        table.add_row("tradeflow / peer (accounts/s)", *[
            f"{r['peer_ratio']:.2f}" if r.get("peer_ratio") else "-" for r in results])
    largest = max(results, key=lambda r: r["accounts_seeded"])
    table.add_row("Redis commands per account (whole server; inside scripts too): engine / peer", *[
        _engine_and_peer(r, lambda c: f"{c['commands_per_account']:.0f}") for r in results])
    table.add_row("Redis time in commands per account, ms (whole server; a script's commands in its "
                  "EVALSHA's time and again on their own)", *[
        f"{r['redis_commands']['command_ms_per_account']:.2f}" for r in results])
    table.add_row("  EVALSHA per account (every script: the engine's and the services'): engine / peer", *[
        _engine_and_peer(r, lambda c: f"{c['all'].get('evalsha', {}).get('calls_per_account', 0):.1f}")
        for r in results])
    table.add_row("Redis reads (about one per round trip) per account: engine / peer", *[
        _engine_and_peer(r, lambda c: f"{c.get('reads_per_account', 0):.1f}") for r in results])
    table.add_row("Redis forks in the run (AOF rewrites): engine / peer", *[
        f"{r.get('redis_forks', '-')} / {r['peer'].get('redis_forks', '-') if 'peer' in r else '-'}" for r in results])
    table.add_row("CPU ceiling, accounts/s", *[f"{r['cpu_ceiling_accounts_per_s'] or 0:.0f}" for r in results])
    for part in largest["cpu_ms_per_account"]:
        table.add_row(f"  CPU ms per account: {part}", *[
            f"{r['cpu_ms_per_account'].get(part, 0):.1f}" for r in results])
    for node in largest["per_step"]:
        table.add_row(f"  {node}: in step / waiting before (median ms)", *[
            f"{r['per_step'][node]['median_ms']:.0f} / {r['per_step'][node]['wait_before_median_ms']:.0f}"
            if node in r["per_step"] else "-" for r in results])
    return table


def run_memory(args: argparse.Namespace, url: str, console: Console, measured: dict[str, Any] | None) -> None:
    """Memory per instance: from the morning run that measured it, else a run of its own."""
    if measured is None:
        console.print(f"memory: a morning run of {args.memory_accounts:,} accounts, Redis {url}")
        result = morning.run(url, _options(args, args.memory_accounts), console, memory=True)
        measured = result["memory"] | {"accounts_seeded": result["accounts_seeded"],
                                       "accounts_started": result["accounts_started"]}
    figures = memory_projection(measured)
    console.print(memory_table(figures))
    write("memory", url, figures, console)


def memory_projection(measured: dict[str, Any]) -> dict[str, Any]:
    """Add the total for 100,000 finished accounts (measured when the run was that size, else linear)."""
    per = measured["per_finished"]["total_bytes"] + measured["proposal_per_account_bytes"]
    exact = measured["accounts_seeded"] >= FULL_ACCOUNTS
    total = (measured["used_memory_after"] - measured["used_memory_before"]) if exact else per * FULL_ACCOUNTS
    return {**measured, "for_100k_finished": {
        "bytes": total, "how": "used_memory delta of the 100k run" if exact else
        f"extrapolated: (engine + proposal bytes per account, measured at {measured['accounts_seeded']:,}) x 100,000",
        "engine_only_bytes": round(measured["per_finished"]["total_bytes"] * FULL_ACCOUNTS)}}


def _kib(n: float | None) -> str:
    return "-" if n is None else f"{n / 1024:,.2f} KiB"


def memory_table(figures: dict[str, Any]) -> Table:
    """Bytes per live and per finished instance, with the parts."""
    fin, live = figures["per_finished"], figures.get("live") or {}
    table = Table("part", "live instance", "finished instance",
                  title=f"Redis memory per instance ({figures['accounts_started']:,} accounts)")
    table.add_row("instance hash", _kib(live.get("hash_bytes")), _kib(fin["hash_bytes"]))
    table.add_row("activity list", _kib(live.get("activity_list_bytes")), _kib(fin["activity_list_bytes"]))
    table.add_row("  records per instance", str(live.get("activity_records", "-")), str(fin["activity_records"]))
    table.add_row("share of indexes", _kib(live.get("index_share_bytes")), _kib(fin["index_share_bytes"]))
    table.add_row("share of queued messages", _kib(live.get("broker_share_bytes")), "-")
    table.add_row("[bold]engine total", _kib(live.get("total_bytes")), f"[bold]{_kib(fin['total_bytes'])}")
    table.add_row("target (finished)", "", _kib(figures["target_bytes"]))
    table.add_row("proposal (portfolio manager)", "", _kib(figures["proposal_per_account_bytes"]))
    table.add_row("engine + proposal", "", _kib(figures["sum_per_account_bytes"]))
    table.add_row("used_memory delta / account", "", _kib(figures["used_memory_delta_per_account"]))
    total = figures["for_100k_finished"]
    table.add_row("100,000 finished accounts", "", f"{total['bytes'] / 2**20:,.0f} MiB")
    for name, size in list(fin["hash_fields_payload_bytes"].items())[:6]:
        table.add_row(f"  hash field {name}", _kib(live.get("hash_fields_payload_bytes", {}).get(name)), _kib(size))
    for name, size in list(fin["activity_records_payload_bytes"].items())[:6]:
        table.add_row(f"  record {name}", _kib(live.get("activity_records_payload_bytes", {}).get(name)), _kib(size))
    return table


def run_submission(args: argparse.Namespace, url: str, console: Console) -> None:
    """The submission phase per account and in blocks, at each size (``bench.blocks``)."""
    results = []
    for accounts in args.submission_accounts:
        for in_blocks in (False, True):
            console.print(f"submission phase: {accounts:,} accounts, {'blocks' if in_blocks else 'per account'}, "
                          f"Redis {url}")
            results.append(blocks.run(url, accounts, in_blocks, args.seed, console, args.timeout))
    table = Table("accounts", "orders", "mode", "brokerage tickets", "approve all, s", "until all submitted, s",
                  "accounts submitted", title="submission phase")
    for r in results:
        table.add_row(f"{r['accounts']:,}", f"{r['orders']:,}", r["mode"], f"{r['tickets']:,}",
                      f"{r['approve_seconds']:.1f}", f"{r['submission_seconds']:.1f}", f"{r['accounts_submitted']:,}")
    console.print(table)
    write("submission", url, {"runs": results}, console)


def run_start(args: argparse.Namespace, url: str, console: Console) -> None:
    """Starting instances alone: ``start_many`` and the daily start (``bench.start``)."""
    console.print(f"starting: {args.start_count:,} instances of {start.WORKFLOW}, no workers, Redis {url}")
    figures = start.run(url, args.start_count, daily=not args.no_daily, seed=args.seed)
    table = Table("measurement", "instances", "s", "instances/s", "CPU ms per instance (starting process / Redis)",
                  title="starting instances")
    for label, key in (("start_many", "start_many"), ("daily start (tradeflow pm run)", "daily_start")):
        if key in figures:
            r = figures[key]
            cpu = r["cpu_ms_per_instance"]
            table.add_row(label, f"{r['instances']:,}", f"{r['seconds']:.2f}", f"{r['instances_per_s']:,}",
                          f"{cpu['starting process']:.3f} / {cpu['redis-server (whole server)']:.3f}")
    console.print(table)
    write("start", url, figures, console)


def run_capacity(args: argparse.Namespace, url: str, console: Console) -> dict[str, Any]:
    """One Redis's ceiling in accounts per second, and memory per instance (``bench.capacity``)."""
    console.print(f"capacity: the engine's Redis operations of {args.capacity_accounts:,} accounts, "
                  f"{args.capacity_clients} clients, on a private redis-server (recorded on {url})")
    figures = capacity.run(url, args.capacity_accounts, args.capacity_clients, seed=args.seed)
    table = Table("figure", "value", title="one Redis's ceiling (the engine's operations, no actions)")
    table.add_row("accounts replayed (clients, pipeline depth)",
                  f"{figures['accounts']:,} ({figures['clients']}, {figures['pipeline_depth']})")
    table.add_row("accounts/s achieved by the clients", f"{figures['accounts_per_s']:,.0f}")
    table.add_row("Redis CPU per account, ms", f"{figures['redis_cpu_ms_per_account']:.3f}")
    table.add_row("[bold]ceiling of one Redis core, accounts/s", f"[bold]{figures['ceiling_accounts_per_s']:,}")
    table.add_row("script calls per account (state.lua, claim.lua)", f"{figures['store_calls_per_account']}")
    table.add_row("  by operation (chain: held transitions in one call)",
                  ", ".join(f"{op} {n}" for op, n in figures.get("store_calls_by_op", {}).items()))
    table.add_row("round trips per account (the scripts', the message's delivery)",
                  f"{figures['round_trips_per_account']}")
    broker = figures["broker_commands_per_account"]
    table.add_row(f"commands Redis ran per account (inside scripts too; the broker's {broker} included)",
                  f"{figures['redis_commands']['commands_per_account']}")
    for name, row in figures["redis_commands"]["top"].items():
        table.add_row(f"  {name}: calls / ms per account", f"{row['calls_per_account']} / {row['ms_per_account']}")
    table.add_row("used_memory per account", _kib(figures["used_memory_per_account_bytes"]))
    for status, row in figures["memory"].items():
        table.add_row(f"  instance ({status}): hash + activity list, median", _kib(row["bytes_median"]))
    console.print(table)
    write("capacity", url, figures, console)
    return figures


def _engine_and_peer(run: dict[str, Any], figure: Callable[[dict[str, Any]], str]) -> str:
    """``figure`` of a morning's Redis commands (:func:`bench.cpu.command_delta`), then the peer's when it ran."""
    peer = (run.get("peer") or {}).get("redis_commands")
    return f"{figure(run['redis_commands'])} / {figure(peer) if peer else '-'}"


def summary_lines(found: dict[str, Any]) -> list[str]:
    """The figures issue-level goals are read from, in one place at the end of the run."""
    lines = [f"load average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1 / 5 / 15 min)"]
    for r in found.get("morning", []):
        cmds = r.get("redis_commands") or {}
        evalsha = (cmds.get("all") or {}).get("evalsha", {}).get("calls_per_account")
        redis_cpu = r.get("cpu_ms_per_account", {}).get("redis-server (whole server)")
        book_cpu = r.get("cpu_ms_per_account", {}).get("book's redis-server (whole server)")
        if book_cpu is not None:
            redis_cpu = f"{redis_cpu} (the book's Redis: {book_cpu})"
        ratio = f"{r['peer_ratio']:.2f} x the plain-script peer" if r.get("peer_ratio") else "no peer run"
        lines.append(f"morning {r['accounts_seeded']:,} accounts, {r['solver'].split()[0]}, {r['workers']}, "
                     f"fleets {'; '.join(r['fleets'])}: {r['accounts_per_s'] or 0:.0f} accounts/s, {ratio}; "
                     f"Redis CPU {redis_cpu} ms per account, {evalsha} script calls (EVALSHA, the engine's and "
                     f"the services'), {cmds.get('reads_per_account')} reads and "
                     f"{cmds.get('commands_per_account')} commands per account (whole server)")
    engine = found.get("engine")
    if engine:
        lines.append(f"every step delivered by Celery: {engine['ratio_engine_message_vs_bare']:.2f} x bare Celery; "
                     f"drained: {engine['ratio_engine_drained_vs_bare']:.2f} x; defaults: "
                     f"{engine['ratio_engine_vs_bare']:.2f} x")
    cap = found.get("capacity")
    if cap:
        lines.append(f"one Redis's ceiling: {cap['ceiling_accounts_per_s']:,} accounts/s per Redis core "
                     f"({cap['redis_cpu_ms_per_account']:.3f} ms of Redis CPU and {cap['round_trips_per_account']} "
                     f"round trips per account, the engine's own operations); per instance: "
                     + ", ".join(f"{k} {v['bytes_median'] / 1024:.1f} KiB" for k, v in cap["memory"].items()))
    return lines


def main(argv: list[str] | None = None) -> None:
    """Run the chosen benchmarks and record their figures."""
    args = parse_args(argv)
    url = state_url(Settings.from_env(), allow_start=True)
    console = Console()
    measured = None
    found: dict[str, Any] = {}
    if "engine" in args.only:
        found["engine"] = run_engine(args, url, console)
    if "morning" in args.only:
        measured = run_morning(args, url, console, memory="memory" in args.only, found=found)
    if "capacity" in args.only:
        found["capacity"] = run_capacity(args, url, console)
    if "memory" in args.only:
        run_memory(args, url, console, measured)
    if "submission" in args.only:
        run_submission(args, url, console)
    if "start" in args.only:
        run_start(args, url, console)
    if found:
        console.print("[bold]summary", highlight=False)
        for line in summary_lines(found):
            console.print("  " + line, highlight=False)


if __name__ == "__main__":
    main()
