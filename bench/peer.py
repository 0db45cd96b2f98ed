"""The plain-script peer of the morning run: the same work per account, no engine, no broker.

What a team would write without tradeflow: list the active accounts, and on a
``multiprocessing.Pool`` over every core, per account, read the book (holdings, model,
prices), build the order-calculation request (``build_plan_request``), plan it
(``order_calc.plan.plan_orders``) and store the plan as a proposal when it has orders --
exactly the work of the rebalance workflows' steps, with the definitions' own parameters
(lookback and ``plan`` of rebalance-ca / rebalance-us, or ``solver`` overridden). No state
machine, no retries, no activity records, no queue: the floor the engine is measured against.

The book is seeded like the morning run's (same generator, seed and size) in a sandbox of
its own; CPU is the pool's children (their rusage) plus the driver, and Redis's own.
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass
from datetime import date
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.cpu import command_delta, command_stats, redis_cpu_parts, redis_forks, self_cpu_seconds
from bench.sandbox import Sandbox

#: Accounts per task handed to a pool process (amortises the pool's own IPC, as a script would).
CHUNK = 50

_worker: dict[str, Any] = {}


@dataclass(frozen=True)
class PeerOptions:
    """The book (size and seed) and how the peer runs."""

    accounts: int
    seed: int = 7
    solver: str | None = None  # None: the definitions' own (milp)
    processes: int | None = None  # None: every core
    pm_redis_url: str | None = None  # the book's Redis (None: the one given to run())


def region_parameters(solver: str | None) -> dict[str, dict[str, Any]]:
    """Per region: the workflow name, its lookback days and its ``plan`` parameters, from the published files."""
    from portfolio_manager.config import DEFAULT_DEFINITIONS_DIR
    from portfolio_manager.daily import WORKFLOWS

    out = {}
    for region, workflow in WORKFLOWS.items():
        document = json.loads((Path(DEFAULT_DEFINITIONS_DIR) / f"{workflow}.json").read_text())
        plan = dict(document["parameters"]["plan"])
        if solver:
            plan["solver"] = solver
        out[region.value] = {"workflow": workflow, "lookback_days": int(document["parameters"]["lookback_days"]),
                             "plan": plan}
    return out


def _init(redis_url: str, pm_prefix: str, run: str, as_of: str, params: dict[str, dict[str, Any]]) -> None:
    from engine.connections import redis_client
    from portfolio_manager.config import PMSettings
    from portfolio_manager.services import build_services

    # the client a worker's services get (hiredis packs its commands): the book reads cost the same on
    # both sides, so the ratio measures the engine's own work
    client = redis_client(redis_url)
    _worker.update(services=build_services(PMSettings(redis_url=redis_url, prefix=pm_prefix), client),
                   run=run, as_of=date.fromisoformat(as_of), params=params)


def plan_account(account_id: str, region: str) -> tuple[str, int]:
    """One account's morning (book reads, request, plan, proposal): (outcome, orders proposed)."""
    from order_calc.plan import plan_orders
    from portfolio_manager.errors import PortfolioError
    from portfolio_manager.order_request import build_plan_request
    from portfolio_manager.proposals import proposal_from_plan

    services, as_of, params = _worker["services"], _worker["as_of"], _worker["params"][region]
    book = services.book
    try:
        holdings = book.get_holdings(account_id, as_of, params["lookback_days"])
        if not holdings.account.active:
            return "closed", 0
        model = book.get_model(holdings.account.model_id)
        prices = book.get_prices([*holdings.positions(), *model.securities], as_of)
        request = build_plan_request(holdings, model, prices, as_of, params["plan"])
        plan = plan_orders(request).model_dump(mode="json")
    except (PortfolioError, ValueError):
        return "failed", 0
    if not plan["orders"]:
        return "nothing", 0
    services.proposals.record(proposal_from_plan(
        run=_worker["run"], account=holdings.account.model_dump(mode="json"), as_of=as_of,
        workflow=params["workflow"], version=0, instance_id=f"peer-{account_id}", plan=plan))
    return "proposed", len(plan["orders"])


def _chunk(accounts: list[tuple[str, str]]) -> list[tuple[str, int]]:
    return [plan_account(account_id, region) for account_id, region in accounts]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(redis_url: str, options: PeerOptions) -> dict[str, Any]:
    """Seed the book, run the peer over every active account, return its figures."""
    from portfolio_manager.cli import last_session
    from portfolio_manager.generator import seed_book

    processes = options.processes or os.cpu_count() or 1
    with Sandbox(redis_url, pm_redis_url=options.pm_redis_url) as sandbox:
        services = sandbox.services()
        run_date = last_session()
        summary = seed_book(services.book, options.accounts, options.seed, run_date)
        accounts = [(a.id, a.region.value) for a in services.book.list_accounts(active_only=True, invalid={})]
        label = f"bench-peer-{options.accounts}"
        params = region_parameters(options.solver)
        chunks = [accounts[i:i + CHUNK] for i in range(0, len(accounts), CHUNK)]
        ctx = get_context("fork")
        book = sandbox.pm_client  # the peer's every command goes to the book's Redis
        redis_cpu, forks, commands = redis_cpu_parts(book), redis_forks(book), command_stats(book)
        children, own = _children_cpu(), self_cpu_seconds()
        began = time.monotonic()
        with ctx.Pool(processes, initializer=_init,
                      initargs=(sandbox.pm_url, sandbox.pm_prefix, label, run_date.isoformat(), params)) as pool:
            results = [r for chunk in pool.imap_unordered(_chunk, chunks) for r in chunk]
            pool.close()
            pool.join()
        wall = time.monotonic() - began
        cpu = {"pool processes": round(_children_cpu() - children, 2), "driver": round(self_cpu_seconds() - own, 2)}
        cpu.update({part: round(seconds - redis_cpu[part], 2)
                    for part, seconds in redis_cpu_parts(book).items()})
        forks = redis_forks(book) - forks
        commands = command_delta(commands, command_stats(book), len(accounts))
        outcomes: dict[str, int] = {}
        for outcome, _ in results:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        started = len(accounts)
        return {
            "accounts_seeded": summary.count, "accounts_started": started, "seed": options.seed,
            "solver": options.solver or "milp (definitions)", "processes": processes,
            "seconds": round(wall, 2), "accounts_per_s": round(started / wall, 1) if wall else None,
            "outcomes": outcomes, "orders_proposed": sum(n for _, n in results),
            "proposals": len(services.proposals.list(label)),
            "cpu_seconds": cpu, "redis_forks": forks, "redis_commands": commands,
            "cpu_ms_per_account": {k: round(v / started * 1000, 2) for k, v in cpu.items()} if started else {},
        }
