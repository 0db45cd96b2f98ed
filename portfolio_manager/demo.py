"""``tradeflow demo``: the morning rebalance end to end, on any machine.

1. Redis: the configured one, or an embedded redis-server when none answers.
2. A synthetic book of ``count`` accounts (seeded, ~2% broken on purpose) as of the most
   recent day both the TSX and the NYSE traded, with its open already past -- so the
   workflows' wait for the open is over at once and the demo never sits for hours.
3. The worker fleets: ``engine`` (threads), ``portfolio_manager`` (prefork),
   ``order_calc`` (prefork), and beat for timers and the sweeper.
4. The daily run with a live progress bar until it is planned (every live account awaits the
   portfolio managers' review), then a few proposals approved -- by two people where four-eyes
   asks for it -- and submitted by their own workflows; the rest is left awaiting review.
5. A summary: accounts planned / failed (with reasons grouped), orders proposed, TLH harvests
   by region, proposals submitted and awaiting review, elapsed time, steps per second, and the
   commands to inspect a failed account and to review the rest.

The demo replays the last session, whose cut-off (the close minus ``review_cutoff``) may have
passed: its run gives the review two hours from now instead (``review_until``).

The demo writes the book under the configured prefix (``pm:``) only when that book is empty
or was written by an earlier demo; a real book is never overwritten.
"""

from __future__ import annotations

import collections
import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from engine.app import build_engine
from engine.config import Settings
from engine.connections import state_url
from engine.instance import InstanceStatus
from engine.ops.fleet import Fleet, default_fleets
from engine.ops.progress import show_progress
from engine.roles import declared_roles
from portfolio_manager.cli import last_session
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import ensure_definitions, start_daily_rebalance
from portfolio_manager.errors import DemoRefused
from portfolio_manager.generator import seed_book
from portfolio_manager.redis_book import RedisBook
from portfolio_manager.services import build_services

console = Console()
DEMO_MARKER = "demo-book"
#: How many proposals the demo approves (the rest stays awaiting review).
DEMO_APPROVALS = 5
DEMO_REVIEW_HOURS = 2
_QUOTED = re.compile(r"'[^']*'")


def _prepare_book(svc: Any, count: int, seed: int, as_of: date) -> Any:
    book = svc.book
    if not isinstance(book, RedisBook):
        raise DemoRefused("the demo seeds the Redis book; unset TRADEFLOW_PM_BOOK_URL to run it")
    client, marker = book.client, book.keys.space.key(DEMO_MARKER)
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
    """Seed ``count`` accounts, start the fleets, run the morning rebalance, print a summary.

    The demo is an edge: it reads its settings (the engine's, the portfolio manager's, the
    console's) from the environment here, once, and passes them in."""
    settings = Settings.from_env()
    settings = settings.with_redis(state_url(settings, allow_start=True))
    engine = build_engine(settings)
    pm_settings = PMSettings.from_env(redis_url=settings.redis_url)
    console.print(f"Redis: {settings.redis_url}")
    run_date = last_session()
    specs = default_fleets()
    env = {**settings.child_env(), "TRADEFLOW_MORNING_RUN": "0"}  # the demo starts its run itself
    with Fleet(specs, beat=True, env=env) as fleet:
        console.print("workers: " + ", ".join(map(str, specs)) + f" + beat (logs in {fleet.logdir})")
        svc = build_services(pm_settings)
        summary = _prepare_book(svc, count, seed, run_date)
        console.print(f"book: {summary.count} accounts {summary.by_region} as of {run_date}, "
                      f"{len(summary.closed_accounts)} closed and {len(summary.missing_price_accounts)} holding an "
                      f"unpriced symbol on purpose", highlight=False)
        versions = ensure_definitions(engine, pm_settings.definitions_dir, roles=declared_roles(settings),
                                      settings=pm_settings)
        console.print("definitions (production): " + ", ".join(f"{n} v{v}" for n, v in sorted(versions.items())))
        run = f"rebalance-{run_date.isoformat()}-demo-{time.strftime('%H%M%S')}"
        began = time.monotonic()
        review_until = datetime.fromtimestamp(engine.clock(), UTC) + timedelta(hours=DEMO_REVIEW_HOURS)
        # The session's close may be past (the demo replays the last session): give the run a
        # deadline ten minutes out, so the console's burn-down has one to show.
        started = start_daily_rebalance(engine, svc.book, run_date, run=run, review_until=review_until,
                                        deadline=datetime.fromtimestamp(engine.clock(), UTC) + timedelta(minutes=10))
        took = time.monotonic() - began
        console.print(f"run [bold]{run}[/bold]: " + ", ".join(f"{n} {w}" for w, n in started.started.items())
                      + (f" started in {took:.1f} s ({started.total / took:,.0f}/s)" if took else ""))
        progress = show_progress(engine, run, follow=True, timeout=timeout, console=console)
        elapsed = time.monotonic() - began
        submitted = approve_a_few(engine, svc, run, timeout=min(timeout, 120.0))
        progress = engine.progress(run)
    _summary(engine, svc, run, progress, elapsed, submitted, settings)


def approve_a_few(engine: Any, svc: Any, run: str, count: int = DEMO_APPROVALS, timeout: float = 120.0) -> list[str]:
    """Approve ``count`` proposals of ``run`` (a four-eyes one by two people) and wait until they are submitted."""
    from engine import Principal
    from portfolio_manager.review import PM_ROLE, approve, pending

    waiting = pending(engine, svc.proposals, run)
    chosen = [p for p in waiting if p.approvals_required > 1][:1]
    chosen += [p for p in waiting if p.approvals_required == 1][:count - len(chosen)]
    accounts = [p.account_id for p in chosen]
    if not accounts:
        return []
    approve(engine, svc.proposals, run, accounts, by=Principal("ana", frozenset({PM_ROLE})), note="demo")
    second = [p.account_id for p in chosen if p.approvals_required > 1]
    if second:
        approve(engine, svc.proposals, run, second, by=Principal("ben", frozenset({PM_ROLE})),
                note="demo: the second pair of eyes")
    ids = [p.instance_id for p in chosen]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # they gather at the block (the rest of the run is still under review)
        if all(i.status.value == "gathering" or i.status.is_terminal for i in engine.get_many(ids)):
            break
        time.sleep(0.2)
    batches = sorted({i.batch for i in engine.get_many(ids) if i.batch})
    for batch_id in batches:  # the desk trades the block now instead of at the cut-off
        engine.close_batch(batch_id, "the demo")
    console.print(f"approved {len(accounts)} proposals ({len(second)} by two people); their block closed now "
                  f"({', '.join(batches) or 'none'}): one brokerage order per symbol and side")
    while time.monotonic() < deadline:
        if all(engine.get(iid).status.is_terminal for iid in ids):
            break
        time.sleep(0.2)
    return [i.data.get("account_id") for i in map(engine.get, ids) if i.status.is_terminal]


def _summary(engine: Any, svc: Any, run: str, progress: Any, elapsed: float, submitted: list[str],
             settings: Settings) -> None:
    from portfolio_manager.review import proposals as shown

    instances = engine.list(run)
    proposals = shown(engine, svc.proposals, run)
    steps = sum(i.seq - 1 for i in instances)
    failed = [i for i in instances if i.status is InstanceStatus.FAILED]
    outcomes = collections.Counter((i.result or {}).get("outcome", "?") for i in instances
                                   if i.status is InstanceStatus.SUCCEEDED)
    table = Table(title=f"morning rebalance {run}", show_header=False)
    table.add_row("accounts", str(progress.total))
    table.add_row("planned", f"{progress.awaiting + len(submitted)} proposed ({progress.awaiting} awaiting review, "
                             f"{len(submitted)} approved and submitted: {outcomes.get('filled', 0)} filled, "
                             f"{outcomes.get('partly_rejected', 0)} partly rejected)")
    table.add_row("nothing to do", str(outcomes.get("nothing_to_do", 0)))
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
    table.add_row("elapsed", f"{elapsed:.1f} s ({progress.total / elapsed:.0f} accounts/s)" if elapsed
                  else f"{elapsed:.1f} s")
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
    console.print(f"what awaits review:        tradeflow pm review {run}", highlight=False)
    console.print("approve (the workflows submit): TRADEFLOW_PRINCIPAL=NAME TRADEFLOW_PRINCIPAL_ROLES=pm "
                  f"tradeflow pm approve {run} --all", highlight=False)
    if submitted:
        console.print(f"a submitted account:       tradeflow pm proposals {run} --account {submitted[0]}",
                      highlight=False)
    try:
        from console.config import ConsoleSettings
        from console.demo import console_banner
    except ImportError:  # the console is not installed
        return
    for line in console_banner(ConsoleSettings.from_env(), settings):
        console.print(line, highlight=False, markup=False)


__all__ = ["run_demo", "reason_kind", "failure_reason", "DemoRefused"]
