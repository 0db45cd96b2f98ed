"""The submission phase at scale: every account's own brokerage tickets vs block orders.

Per size N, in a sandbox of its own on the shared Redis (:mod:`bench.sandbox`), twice -- once
per account (``submit_orders``: a ticket per order) and once in blocks (``trade_blocks`` at a
``gather`` node: a ticket per exchange, symbol and side):

1. synthesize N approved proposals reviewed in their workflow (60 % CA, 40 % US; 1 to 8
   orders each, ~4.4 on average like the morning's plans; symbols of the region's universe,
   2/3 buys), seeded;
2. start N instances of a submission workflow that awaits ``approve``, then goes to the
   account's own ``submit`` or to the ``block`` gather node (grouped by run and exchange) --
   the rebalances' last three nodes, without the planning before them;
3. on the real fleets (engine threads, portfolio_manager as the plugin declares it, beat),
   approve every instance at once (``Engine.signal_run``) and time the phase from the first
   approval to the last account submitted; count the tickets the brokerage received.

Nothing here asserts a time.
"""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from rich.console import Console

from bench.sandbox import Sandbox
from engine.api import StartItem
from engine.definitions.validation import load_definition
from engine.ops.fleet import Fleet, default_fleets
from engine.principal import Principal

WORKFLOW = "bench-submission"
EXCHANGE = {"CA": "XTSE", "US": "XNYS"}


def definition() -> dict[str, Any]:
    """The rebalances' review, block and submission nodes, on their own."""
    return {
        "name": WORKFLOW,
        "initial_data": {"type": "object", "required": ["account_id", "exchange", "block_orders", "close_at"]},
        "start": "review",
        "nodes": {
            "review": {"type": "await", "signals": {"approve": "route"}},
            "route": {"type": "choice", "choices": [{"when": "data.block_orders", "next": "block"}],
                      "default": "submit"},
            "block": {"type": "gather", "service": "portfolio_manager", "action": "trade_blocks",
                      "group": "instance.run + ':' + data.exchange", "close": "timestamp(data.close_at)",
                      "input": {"run": "instance.run", "account_id": "data.account_id", "fractional": False},
                      "transitions": {"ok": "done"}, "retry": {"max_attempts": 5, "backoff_seconds": 2},
                      "timeout_seconds": 1800},
            "submit": {"type": "service", "service": "portfolio_manager", "action": "submit_orders",
                       "input": {"step": "instance", "run": "instance.run", "account_id": "data.account_id"},
                       "transitions": {"ok": "done"}, "retry": {"max_attempts": 5, "backoff_seconds": 2},
                       "timeout_seconds": 300},
            "done": {"type": "terminal", "status": "succeeded"},
        },
    }


def proposals(run: str, accounts: int, seed: int, as_of: date, cutoff: float) -> list[Any]:
    """``accounts`` synthetic proposals of ``run``, reviewed in their workflow."""
    from portfolio_manager.proposals import Proposal, ProposedOrder
    from portfolio_manager.universe import UNIVERSE, Region

    rng = random.Random(seed)
    symbols = {region: [(s, cls.base_price) for cls in UNIVERSE[region] for s in cls.securities] for region in Region}
    out = []
    for n in range(accounts):
        region = Region.CA if rng.random() < 0.6 else Region.US
        account = f"{region.value}-{n:07d}"
        chosen = rng.sample(symbols[region], rng.choice([1, 2, 3, 4, 4, 5, 5, 6, 7, 8]))
        orders = []
        for index, (symbol, price) in enumerate(chosen):
            quantity = float(rng.randint(1, 300))
            orders.append(ProposedOrder(index=index, side="BUY" if rng.random() < 2 / 3 else "SELL", symbol=symbol,
                                        quantity=quantity, reason="rebalance", est_value=round(quantity * price, 2)))
        out.append(Proposal(run=run, account_id=account, region=region.value, account_type="NON_REGISTERED",
                            as_of=as_of, workflow=WORKFLOW, version=1, instance_id=f"{run}-{account}",
                            mode="REBALANCE", orders=orders, recorded_at=time.time(), in_workflow=True,
                            cutoff=cutoff))
    return out


def run(redis_url: str, accounts: int, blocks: bool, seed: int = 7, console: Console | None = None,
        timeout: float = 3600.0) -> dict[str, Any]:
    """One submission phase of ``accounts`` approved accounts, in blocks or per account; its figures."""
    from portfolio_manager.proposals import ProposalStatus

    console = console or Console()
    mode = "blocks" if blocks else "per-account"
    with Sandbox(redis_url) as sandbox:
        engine, services = sandbox.engine, sandbox.services()
        engine.publish(load_definition(json.dumps(definition())), alias="production")
        label = f"bench-submission-{mode}-{accounts}"
        close_at = datetime.now(UTC) + timedelta(days=1)
        made = proposals(label, accounts, seed, date.today(), close_at.timestamp())
        for proposal in made:
            services.proposals.record(proposal)
        services.proposals.transition_many([(label, p.account_id, ProposalStatus.APPROVED, {}) for p in made])
        items = [StartItem({"account_id": p.account_id, "exchange": EXCHANGE[p.region], "block_orders": blocks,
                            "close_at": close_at.isoformat()}, p.instance_id) for p in made]
        engine.start_many(WORKFLOW, items, run=label)
        orders = sum(len(p.orders) for p in made)
        figures: dict[str, Any] = {"mode": mode, "accounts": accounts, "orders": orders, "seed": seed,
                                   "fleets": [str(s) for s in default_fleets()]}
        with Fleet(default_fleets(), beat=True, env=sandbox.env()) as fleet:
            progress = engine.wait_for_run(label, timeout=600, poll=0.2, settled=True)
            if progress.awaiting != accounts:
                logs = "\n".join(p.read_text()[-2000:] for p in fleet.logdir.glob("*.log"))
                raise RuntimeError(f"{label}: not every instance awaits approval: {progress.counts}\n{logs}")
            console.print(f"{label}: {accounts:,} accounts, {orders:,} orders approved at once")
            began = time.monotonic()
            engine.signal_run(label, "approve", by=Principal("bench", frozenset({"pm"})))
            figures["approve_seconds"] = round(time.monotonic() - began, 2)
            progress = engine.wait_for_run(label, timeout=timeout, poll=0.2)
            figures["submission_seconds"] = round(time.monotonic() - began, 2)
        brokerage = services.brokerage
        figures["tickets"] = brokerage.received_count() + brokerage.received_block_count()  # type: ignore[attr-defined]
        figures["accepted_orders"] = len(brokerage.accepted_orders())  # type: ignore[attr-defined]
        figures["accepted_blocks"] = len(brokerage.accepted_blocks())  # type: ignore[attr-defined]
        figures["counts"] = {k: v for k, v in progress.counts.items() if v}
        submitted = services.proposals.list(label, [ProposalStatus.SUBMITTED])
        figures["accounts_submitted"] = len(submitted)
        if blocks:
            steps = []
            for batch in engine.batches(10):
                records = engine.batch(batch.id).activities
                asked = [r for r in records if r["event"] == "answered"]
                applied = [r for r in records if r["event"] == "applied"]
                steps.append({"batch": batch.id, "members": batch.members,
                              "action_seconds": round(asked[0]["ended_at"] - asked[0]["started_at"], 2) if asked
                              else None,
                              "step_seconds": round(applied[0]["ended_at"] - applied[0]["started_at"], 2) if applied
                              else None})
            figures["batches"] = steps
    return figures
