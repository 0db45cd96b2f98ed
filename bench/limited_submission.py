"""The morning's submission with the brokerage limited: every account's own tickets under the
``brokerage`` rate limit, against a simulated brokerage that refuses what goes over its own rate.

    python -m bench.limited_submission --accounts 20000 --rate 250 --headroom 0.02

In a sandbox (:mod:`bench.sandbox`) on the shared Redis: N approved proposals (as
:mod:`bench.blocks` makes them), N submission instances approved at once; the ``submit`` node
carries ``limits.rate`` (key ``'brokerage'``, cost: the account's orders) and the brokerage
accepts ``--rate`` requests a second (``TRADEFLOW_PM_BROKER_ACCEPTS``), counted on Redis's clock;
the engine's limit is ``--rate`` less ``--headroom`` (a fraction, default none): a call is counted
when its step starts, a few milliseconds before its requests reach the brokerage.
Prints the time of the phase (and of the approvals within it), the orders, orders / rate, the
requests refused for the rate, the busiest second, how many seconds saw requests and how many
times a step was parked (``--profile``: the requests of each second too). Nothing here asserts
a time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from rich.console import Console

from bench import blocks
from bench.sandbox import Sandbox
from engine.api import StartItem
from engine.definitions.validation import load_definition
from engine.ops.fleet import Fleet, default_fleets
from engine.principal import Principal


def definition(rate: float | None) -> dict[str, Any]:
    """The submission workflow of :mod:`bench.blocks` with the brokerage limit on its ``submit`` node
    (none when ``rate`` is None)."""
    body = blocks.definition()
    if rate is not None:
        body["nodes"]["submit"]["limits"] = {"rate": {"key": "'brokerage'", "per_second": rate,
                                                      "burst": max(int(rate), 1), "cost": "data.orders"}}
    return body


def run(redis_url: str, accounts: int, rate: float, seed: int = 7, console: Console | None = None,
        headroom: float = 0.0, limited: bool = True) -> dict[str, Any]:
    """One limited submission phase of ``accounts`` approved accounts, the brokerage accepting ``rate``
    requests a second and the engine's limit ``headroom`` (a fraction) under it; its figures.
    ``limited=False``: the same phase without the engine's limit (the brokerage still refuses)."""
    from portfolio_manager.brokerage import SimulatedBrokerage
    from portfolio_manager.proposals import ProposalStatus

    console = console or Console()
    with Sandbox(redis_url) as sandbox:
        engine, services = sandbox.engine, sandbox.services()
        limit = rate * (1 - headroom)
        engine.publish(load_definition(json.dumps(definition(limit if limited else None))), alias="production")
        label = f"bench-limited-{accounts}"
        close_at = datetime.now(UTC) + timedelta(days=1)
        made = blocks.proposals(label, accounts, seed, date.today(), close_at.timestamp())
        for proposal in made:
            services.proposals.record(proposal)
        services.proposals.transition_many([(label, p.account_id, ProposalStatus.APPROVED, {}) for p in made])
        items = [StartItem({"account_id": p.account_id, "exchange": blocks.EXCHANGE[p.region], "block_orders": False,
                            "close_at": close_at.isoformat(), "orders": len(p.orders)}, p.instance_id) for p in made]
        engine.start_many(blocks.WORKFLOW, items, run=label)
        orders = sum(len(p.orders) for p in made)
        env = {**sandbox.env(), "TRADEFLOW_PM_BROKER_ACCEPTS": str(int(rate))}
        with Fleet(default_fleets(), beat=True, env=env):
            engine.wait_for_run(label, timeout=600, poll=0.2, settled=True)
            console.print(f"{label}: {accounts:,} accounts, {orders:,} orders approved at once, limit {limit:g}/s, "
                          f"brokerage {rate:g}/s")
            began = time.monotonic()
            engine.signal_run(label, "approve", by=Principal("bench", frozenset({"pm"})))
            approved = time.monotonic() - began
            progress = engine.wait_for_run(label, timeout=7200, poll=0.2)
            seconds = time.monotonic() - began
        broker = SimulatedBrokerage(sandbox.client, sandbox.pm_prefix + "broker:")
        per_second = broker.requests_per_second()
        states = sandbox.store.limit_states(["brokerage"])
        return {"accounts": accounts, "orders": orders, "rate": rate, "limit": limit,
                "submission_seconds": round(seconds, 1),
                "approvals_seconds": round(approved, 1),
                "orders_over_rate_seconds": round(orders / rate, 1),
                "orders_over_limit_seconds": round(orders / limit, 1),
                "accepted_orders": len(broker.accepted_orders()), "received": broker.received_count(),
                "rejected_for_rate": broker.rejected_for_rate(), "busiest_second": max(per_second.values(), default=0),
                "parked": states[0].waits if states else 0,
                "active_seconds": len(per_second),
                "counts": {k: v for k, v in progress.counts.items() if v},
                "per_second": [per_second[k] for k in sorted(per_second)]}


def main() -> None:
    """Command line: ``--accounts``, ``--rate``, ``--headroom``, ``--profile``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=250.0, help="requests a second the brokerage accepts")
    parser.add_argument("--headroom", type=float, default=0.0, help="the engine's limit under --rate (0.02: 2%%)")
    parser.add_argument("--profile", action="store_true", help="also print the requests of each second")
    args = parser.parse_args()
    url = os.environ.get("TRADEFLOW_REDIS_URL", "redis://127.0.0.1:6379/14")
    figures = run(url, args.accounts, args.rate, headroom=args.headroom)
    profile = figures.pop("per_second")
    if args.profile:
        figures["per_second"] = profile
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
