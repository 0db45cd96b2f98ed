"""``tradeflow demo``: the morning rebalance end to end, on any machine.

1. Redis: the configured one, or an embedded redis-server when none answers.
2. A synthetic book of ``count`` accounts (seeded, ~2% broken on purpose) as of the most
   recent day both the TSX and the NYSE traded, with its open already past -- so the
   workflows' wait for the open is over at once and the demo never sits for hours.
3. The worker fleets: ``engine`` (threads), ``portfolio_manager`` (prefork),
   ``order_calc`` (prefork), and beat for timers and the sweeper.
4. The daily run with a live progress bar, then a summary: accounts succeeded / failed (with
   reasons grouped), orders proposed, TLH harvests by region, elapsed time, steps per second,
   and the commands to inspect a failed account and to review the proposals.

The demo writes the book under the configured prefix (``pm:``) only when that book is empty
or was written by an earlier demo; a real book is never overwritten.
"""

from __future__ import annotations

import collections
import os
import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from engine.model import InstanceStatus

console = Console()
DEMO_MARKER = "demo-book"
_QUOTED = re.compile(r"'[^']*'")


class DemoRefused(RuntimeError):
    """The configured book is a real one: the demo will not overwrite it."""


def _prepare_book(svc: Any, count: int, seed: int, as_of: date) -> Any:
    from portfolio_manager.generator import seed_book
    from portfolio_manager.redis_book import RedisBook

    book = svc.book
    if not isinstance(book, RedisBook):
        raise DemoRefused("the demo seeds the Redis book; unset TRADEFLOW_PM_BOOK_URL to run it")
    client, marker = book.client, f"{book.keys.prefix}{DEMO_MARKER}"
    if client.hlen(book.keys.accounts) and not client.exists(marker):
        raise DemoRefused(f"the book under prefix {book.keys.prefix!r} is not a demo book; run the demo beside it "
                          "with TRADEFLOW_PM_PREFIX=pm:demo: tradeflow demo")
    book.clear()
    summary = seed_book(book, count, seed, as_of)
    client.hset(marker, mapping={"count": count, "seed": seed, "as_of": as_of.isoformat()})
    return summary


def reason_kind(reason: str) -> str:
    """A failure reason with its particulars (quoted ids and symbols) blanked, for grouping."""
    return _QUOTED.sub("…", reason)


def failure_reason(instance: Any) -> str:
    """Why an instance failed: its error, or the result of the failed terminal it reached."""
    if instance.error:
        return str(instance.error.get("reason", "?"))
    if isinstance(instance.result, dict) and instance.result.get("reason"):
        return str(instance.result["reason"])
    return f"ended at {instance.node}"


def run_demo(count: int = 3000, seed: int = 7, timeout: float = 900.0) -> None:
    """Seed ``count`` accounts, start the fleets, run the morning rebalance, print a summary."""
    from engine.app import build_engine
    from engine.cli import show_progress
    from engine.fleet import Fleet, default_fleets
    from portfolio_manager.actions import services
    from portfolio_manager.cli import last_session
    from portfolio_manager.config import PMSettings
    from portfolio_manager.daily import ensure_definitions, start_daily_rebalance

    os.environ["TRADEFLOW_MORNING_RUN"] = "0"  # the demo starts its run itself
    engine = build_engine(allow_start=True)
    console.print(f"Redis: {os.environ['TRADEFLOW_REDIS_URL']}")
    run_date = last_session()
    specs = default_fleets()
    with Fleet(specs, beat=True) as fleet:
        console.print("workers: " + ", ".join(map(str, specs)) + f" + beat (logs in {fleet.logdir})")
        svc = services()
        summary = _prepare_book(svc, count, seed, run_date)
        console.print(f"book: {summary.count} accounts {summary.by_region} as of {run_date}, "
                      f"{len(summary.closed_accounts)} closed and {len(summary.missing_price_accounts)} holding an "
                      f"unpriced symbol on purpose", highlight=False)
        versions = ensure_definitions(engine, PMSettings.from_env().definitions_dir)
        console.print("definitions (production): " + ", ".join(f"{n} v{v}" for n, v in sorted(versions.items())))
        run = f"rebalance-{run_date.isoformat()}-demo-{time.strftime('%H%M%S')}"
        began = time.monotonic()
        # The session's close may be past (the demo replays the last session): give the run a
        # deadline ten minutes out, so the console's burn-down has one to show.
        started = start_daily_rebalance(engine, svc.book, run_date, run=run,
                                        deadline=datetime.now(UTC) + timedelta(minutes=10))
        console.print(f"run [bold]{run}[/bold]: " + ", ".join(f"{n} {w}" for w, n in started.started.items()))
        progress = show_progress(engine, run, follow=True, timeout=timeout)
        elapsed = time.monotonic() - began
    _summary(engine, svc, run, progress, elapsed)


def _summary(engine: Any, svc: Any, run: str, progress: Any, elapsed: float) -> None:
    instances = engine.list(run)
    proposals = svc.proposals.list(run)
    steps = sum(i.seq - 1 for i in instances)
    failed = [i for i in instances if i.status is InstanceStatus.FAILED]
    outcomes = collections.Counter((i.result or {}).get("outcome", "?") for i in instances
                                   if i.status is InstanceStatus.SUCCEEDED)
    table = Table(title=f"morning rebalance {run}", show_header=False)
    table.add_row("accounts", str(progress.total))
    table.add_row("succeeded", f"{progress.counts.get('succeeded', 0)} ({outcomes.get('proposed', 0)} proposed, "
                               f"{outcomes.get('nothing_to_do', 0)} nothing to do)")
    table.add_row("failed", str(len(failed)))
    for status in ("running", "waiting", "paused", "cancelled"):
        if progress.counts.get(status):
            table.add_row(status, str(progress.counts[status]))
    orders = [o for p in proposals for o in p.orders]
    buys = sum(1 for o in orders if o.side == "BUY")
    table.add_row("orders proposed", f"{len(orders)} ({buys} buys, {len(orders) - buys} sells)")
    by_region = collections.Counter()
    for p in proposals:
        by_region[p.region] += p.tlh_harvests
    table.add_row("TLH harvests", ", ".join(f"{r} {by_region.get(r, 0)}" for r in ("CA", "US")))
    table.add_row("elapsed", f"{elapsed:.1f} s")
    table.add_row("steps applied", f"{steps} ({steps / elapsed:.0f} steps/s)" if elapsed else str(steps))
    console.print(table)
    if failed:
        groups: dict[str, list[Any]] = collections.defaultdict(list)
        for i in failed:
            groups[reason_kind(failure_reason(i))].append(i)
        console.print("failures by reason:")
        for kind, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            example = members[0]
            console.print(f"  {len(members):5d}  {kind}  (e.g. {example.data.get('account_id')}: "
                          f"{failure_reason(example)})", highlight=False, markup=False)
        console.print(f"inspect a failed account:  tradeflow inspect {failed[0].id}", highlight=False)
    console.print(f"review the proposals:      tradeflow pm proposals {run}", highlight=False)
    if proposals:
        console.print(f"one account in full:       tradeflow pm proposals {run} --account {proposals[0].account_id}",
                      highlight=False)
    console.print(f"approve, then submit:      tradeflow pm approve {run} --all && tradeflow pm submit {run}",
                  highlight=False)
    try:
        from console.demo import console_banner
    except ImportError:  # the console is not installed
        return
    for line in console_banner():
        console.print(line, highlight=False, markup=False)


__all__ = ["run_demo", "reason_kind", "failure_reason", "DemoRefused"]
