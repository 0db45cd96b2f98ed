"""``tradeflow pm ...`` and ``tradeflow accounts ...``: the portfolio manager's commands.

\b
    tradeflow accounts seed --count 2000 --seed 7     a synthetic book (demo, tests)
    tradeflow pm run [--date D]                       the morning rebalance, with live progress
    tradeflow pm proposals RUN [--account A]          review what the run proposes
    tradeflow pm review RUN                           what still awaits a decision, approvals so far
    tradeflow pm approve RUN A1 A2 | --all            approve: the account's workflow trades the orders (block)
    tradeflow pm reject RUN A1 --reason WHY           reject: the account's workflow ends
    tradeflow pm submit RUN                           send separately submitted proposals (deposits)

Settings come from the environment (``TRADEFLOW_REDIS_URL``, ``TRADEFLOW_PM_PREFIX``...: see
:mod:`portfolio_manager.config`). Decisions are taken as the CLI's principal:
``TRADEFLOW_PRINCIPAL`` with the roles of ``TRADEFLOW_PRINCIPAL_ROLES`` (``pm`` decides).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from engine.cli_context import CliContext, cli_context, cli_settings, notice
from engine.cli_errors import ErrorGroup, read_only, rerun
from engine.config import Settings
from engine.connections import state_url
from engine.errors import TradeflowError
from engine.ops.progress import show_progress
from engine.roles import declared_roles
from portfolio_manager.config import PMSettings
from portfolio_manager.errors import PortfolioError
from portfolio_manager.generator import seed_book
from portfolio_manager.proposals import Proposal, ProposalStatus
from portfolio_manager.redis_book import RedisBook
from portfolio_manager.review import cutoff_text
from portfolio_manager.services import build_services

console = Console()
err_console = Console(stderr=True)


class _Group(ErrorGroup):
    """The portfolio manager's groups: its own errors (and a missing file) as one line too."""

    known = (TradeflowError, PortfolioError, FileNotFoundError)

def pm_settings(redis_url: str | None = None) -> PMSettings:
    """This invocation's :class:`PMSettings`, read once (on the click context object, :mod:`engine.cli_context`).

    ``redis_url``: the engine's Redis as resolved (used when ``TRADEFLOW_PM_REDIS_URL`` is unset).
    """
    context = cli_context()
    if PMSettings not in context.built:
        context.built[PMSettings] = PMSettings.from_env(context.env, redis_url=redis_url)
    return context.get(PMSettings)


def engine_and_services() -> tuple[Any, Any]:
    """The engine (resolving Redis first, so the book uses the same one) and the PM services, built from
    this invocation's settings (the pm group's commands, and the shadow commands added to it)."""
    from engine.app import build_engine  # celery: imported by the commands that need it, not by --help

    settings = cli_settings(Settings)
    url = state_url(settings, notice=notice)  # the configured Redis (retried, never replaced) or the embedded one
    return build_engine(settings.with_redis(url)), build_services(pm_settings(url))


def _run_label(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A ``--run`` label checked before anything starts (:func:`engine.labels.check_run_label`)."""
    from engine.errors import InvalidInput
    from engine.labels import check_run_label

    if value is None:
        return None
    try:
        return check_run_label(value)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc)) from None


def _principal(by: str = "") -> Any:
    """Who the CLI acts as (``TRADEFLOW_PRINCIPAL``, ``TRADEFLOW_PRINCIPAL_ROLES``); ``--by`` may only repeat it."""
    from engine.cli_identity import cli_principal

    principal = cli_principal()
    if by and by != principal.name:
        raise click.UsageError(f"--by {by}: this command acts as {principal.name} (TRADEFLOW_PRINCIPAL), and nobody "
                               f"may decide in another person's name; set TRADEFLOW_PRINCIPAL={by} in {by}'s own "
                               "environment instead")
    return principal


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD") from None


def _parse_moment(value: str | None, option: str) -> datetime | None:
    """An ISO date-time with a UTC offset given to ``option`` (None when not given)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: use an ISO date-time such as 2026-11-27T15:30-05:00",
                                 param_hint=option) from None
    if moment.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no UTC offset; add one, e.g. -05:00", param_hint=option)
    return moment


_context = engine_and_services


def publish_definitions(engine: Any) -> None:
    """Publish the definitions of ``TRADEFLOW_DEFINITIONS_DIR`` (roles: this invocation's declared ones)."""
    from portfolio_manager.daily import ensure_definitions  # celery: imported on use, not by --help

    ensure_definitions(engine, pm_settings().definitions_dir, roles=lambda: declared_roles(cli_settings(Settings)),
                       settings=pm_settings())


_definitions = publish_definitions


# --------------------------------------------------------------------------- pm


@click.group(cls=_Group)
@click.pass_context
def pm(ctx: click.Context) -> None:
    """Portfolio manager: the morning rebalance, proposals, review and submission."""
    ctx.ensure_object(CliContext)  # this invocation's settings, read once (the tradeflow group's when under it)


@pm.command("run")
@click.option("--date", "day", help="Trading day (YYYY-MM-DD); default today (Toronto/New York).")
@click.option("--region", "regions", multiple=True, type=click.Choice(["CA", "US"]), help="Only these regions.")
@click.option("--no-wait", is_flag=True, help="Start at once instead of waiting for the market open.")
@click.option("--version", "version", default="production", show_default=True, help="Definition version or alias.")
@click.option("--run", "run", callback=_run_label, help="Run label (default rebalance-<date>).")
@click.option("--limit", type=int, help="At most this many accounts (a trial run).")
@click.option("--watch/--no-watch", default=True, help="Follow the run's progress until it is done.")
@click.option("--deadline", help="When the run must be done (ISO date-time with offset, e.g. 2026-11-27T15:30-05:00);"
              " default: the earliest market close minus --deadline-margin.")
@click.option("--deadline-margin", default=30, show_default=True, type=click.IntRange(0, 24 * 60),
              help="Minutes before the close for the default deadline.")
@click.option("--review-until", "review_until",
              help="When the review of the run's proposals closes (ISO date-time with offset, e.g. "
                   "2026-11-27T15:45-05:00); default: each exchange's close minus the definition's review_cutoff.")
@rerun(safe=True, why="accounts already started in the run are not started again")
def pm_run(day: str | None, regions: tuple[str, ...], no_wait: bool, version: str, run: str | None,
           limit: int | None, watch: bool, deadline: str | None, deadline_margin: int,
           review_until: str | None) -> None:
    """Start the daily rebalance: one instance per active account, the workflow chosen by region.

    A run started after its review's cut-off is started (exit 0) with a warning on stderr:
    its proposals would expire as soon as they are recorded; --review-until gives them a window.
    """
    from portfolio_manager.daily import start_daily_rebalance  # celery: imported on use, not by --help

    until = _parse_moment(deadline, "--deadline")
    window = _parse_moment(review_until, "--review-until")
    engine, svc = _context()
    _definitions(engine)
    started = start_daily_rebalance(engine, svc.book, _parse_date(day), run=run, regions=regions or None,
                                    wait_for_open=not no_wait, version=version, limit=limit, deadline=until,
                                    deadline_margin=timedelta(minutes=deadline_margin), review_until=window)
    now = datetime.fromtimestamp(engine.clock(), UTC)
    for workflow, closed_at in started.review_closed(now).items():
        click.echo(f"warning: the review of {workflow} in run {started.run} closed at "
                   f"{closed_at.isoformat(timespec='minutes')}: its proposals expire as soon as they are recorded "
                   f"and nothing of them is traded. Give the run a review window with --review-until, e.g. "
                   f"--review-until {(now + timedelta(hours=2)).isoformat(timespec='minutes')}", err=True)
    for region, reason in started.skipped_regions.items():
        console.print(f"[yellow]{region} skipped:[/yellow] {reason}", highlight=False)
    for account_id, reason in started.invalid_accounts.items():
        err_console.print(f"[red]account {account_id} not started[/red] (invalid in the book): {reason}",
                          highlight=False)
    console.print(f"run [bold]{started.run}[/bold]: started " +
                  (", ".join(f"{n} {w}" for w, n in started.started.items()) or "nothing") +
                  (f" ({started.already_started} already started)" if started.already_started else ""))
    if started.deadline is not None:
        console.print(f"deadline {started.deadline.isoformat(timespec='minutes')} (the console warns when the "
                      "projected finish passes it)", highlight=False)
    if watch and (started.total or started.already_started):
        show_progress(engine, started.run)
        console.print(f"next: tradeflow pm proposals {started.run}")


@pm.command("enqueue")
@click.argument("account_ids", nargs=-1, required=True)
@click.option("--date", "day", help="Trading day (YYYY-MM-DD); default today.")
@click.option("--run", "run", callback=_run_label, help="Run label (default adhoc-rebalance-<date>).")
@click.option("--wait-for-open", is_flag=True, help="Wait for the market open (default: start now).")
@rerun(safe=True, why="accounts already started in the run are not started again")
def pm_enqueue(account_ids: tuple[str, ...], day: str | None, run: str | None, wait_for_open: bool) -> None:
    """Rebalance ACCOUNT_IDS now, each with its region's workflow."""
    from portfolio_manager.daily import enqueue_accounts, today_in  # celery: imported on use, not by --help

    engine, svc = _context()
    _definitions(engine)
    started = enqueue_accounts(engine, svc.book, account_ids, _parse_date(day) or today_in(), run=run,
                               wait_for_open=wait_for_open)
    console.print(f"run [bold]{started.run}[/bold]: started {started.total}"
                  + (f", {started.already_started} already started" if started.already_started else ""))
    for account_id in started.unknown_accounts:
        err_console.print(f"[yellow]unknown account[/yellow] {account_id}: not started", highlight=False)
    for iid in started.instance_ids:
        click.echo(iid)


@pm.command("deposit")
@click.argument("account_id")
@click.argument("amount", type=float)
@click.option("--date", "day", help="Trading day (YYYY-MM-DD); default today.")
@click.option("--run", "run", default=None, callback=_run_label, help="Run label (default deposits-<date>).")
@rerun(safe=False, why="the deposit may have been started already; look with `tradeflow list --run deposits-DATE`")
def pm_deposit(account_id: str, amount: float, day: str | None, run: str | None) -> None:
    """Invest a deposit of AMOUNT into ACCOUNT_ID now (workflow invest-deposit); the plan is proposed."""
    from portfolio_manager.daily import DEPOSIT_WORKFLOW, today_in  # celery: imported on use, not by --help

    engine, _ = _context()
    _definitions(engine)
    as_of = _parse_date(day) or today_in()
    iid = engine.start(DEPOSIT_WORKFLOW, {"account_id": account_id, "as_of": as_of.isoformat(), "amount": amount},
                       version="production", run=run or f"deposits-{as_of.isoformat()}")
    click.echo(iid)


@pm.command("runs")
@read_only
def pm_runs() -> None:
    """Runs with proposals, newest first, by review status."""
    from portfolio_manager import review

    engine, svc = _context()
    table = Table("run", "proposals", *(s.value for s in ProposalStatus))
    for run in svc.proposals.runs():
        counts = dict.fromkeys(ProposalStatus, 0)
        proposals = review.proposals(engine, svc.proposals, run)
        for p in proposals:
            counts[p.status] += 1
        table.add_row(run, str(len(proposals)), *(str(counts[s]) for s in ProposalStatus))
    console.print(table)


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _when(epoch: float | None) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds") if epoch else "?"


def _proposal_detail(p: Proposal) -> None:
    console.print(f"[bold]{p.account_id}[/bold] ({p.region} {p.account_type})  run {p.run}  as of {p.as_of}  "
                  f"mode {p.mode}  status [bold]{p.status.value}[/bold]", highlight=False)
    console.print(f"workflow {p.workflow} v{p.version}, instance {p.instance_id}", highlight=False)
    if p.in_workflow:
        console.print(f"reviewed in its workflow: cut-off {cutoff_text(p)}, order value {_money(p.order_value)}, "
                      f"approvals {len(p.approvals)} of {p.approvals_required}"
                      + (" (four-eyes)" if p.approvals_required > 1 else ""), highlight=False)
    for a in p.approvals:
        console.print(f"  approved by {a['by']} at {_when(a.get('at'))}" + (f": {a['note']}" if a.get("note") else ""),
                      highlight=False)
    if p.decided_by or p.note:
        console.print(f"decided by {p.decided_by or '?'}: {p.note or ''}", highlight=False)
    table = Table("#", "side", "symbol", "quantity", "reason", "est. value", "realized gain", "lots")
    for o in p.orders:
        lots = ", ".join(f"{lot['lot_id']} x{lot['quantity']:g}" + (f" {lot['term']}" if lot.get("term") else "")
                         for lot in o.lots or [])
        table.add_row(str(o.index), o.side, o.symbol, f"{o.quantity:g}", o.reason, _money(o.est_value),
                      _money(o.realized_gain) if o.lots else "", lots)
    console.print(table)
    console.print(f"buys {_money(p.buy_value)}  sells {_money(p.sell_value)}  realized gain "
                  f"{_money(p.realized_gain)}  cash after {_money(p.cash_after)}", highlight=False)
    for line in p.diagnostics:
        console.print(f"  diagnostic: {line}", highlight=False)
    for r in p.restrictions:
        console.print(f"  restricted: {r.get('symbol')} until {r.get('until')}", highlight=False)
    for r in p.receipts:
        if r.get("block"):  # an allocation of a block order
            console.print(f"  receipt {r['order_id']} {r['status']} {r['side']} {r['quantity']:g} of {r['requested']:g}"
                          f" {r['symbol']} @ {r.get('avg_price')} (average)  block {r['block']}"
                          + (f"  {r['reason']}" if r.get("reason") else ""), highlight=False)
            continue
        console.print(f"  receipt {r['order_id']} {r['status']} {r['side']} {r['quantity']:g} {r['symbol']}"
                      f" @ {r.get('fill_price')}  key {r['idempotency_key']}", highlight=False)


@pm.command("proposals")
@click.argument("run")
@click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in ProposalStatus]))
@click.option("--account", "account_id", help="Show one account's proposal in full.")
@click.option("--limit", default=50, show_default=True, help="Rows to show (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (every matching proposal).")
@read_only
def pm_proposals(run: str, statuses: tuple[str, ...], account_id: str | None, limit: int, as_json: bool) -> None:
    """List RUN's proposals: per account its orders, reasons, realized gains and diagnostics."""
    from portfolio_manager import review

    engine, svc = _context()
    if account_id:
        p = review.proposal(engine, svc.proposals, run, account_id)
        if as_json:
            click.echo(p.model_dump_json(indent=2))
        else:
            _proposal_detail(p)
        return
    proposals = review.proposals(engine, svc.proposals, run, statuses or None)
    if as_json:
        click.echo(json.dumps([p.model_dump(mode="json") for p in proposals], indent=2))
        return
    if not proposals:
        console.print(f"no proposals in run {run} (`tradeflow pm runs` lists the runs)")
        return
    table = Table("account", "region", "type", "status", "mode", "orders", "reasons", "buys", "sells",
                  "realized gain", "diagnostics", title=f"run {run}")
    for p in proposals[:limit or None]:
        reasons = " ".join(f"{k}:{v}" for k, v in sorted(p.reasons().items()))
        table.add_row(p.account_id, p.region, p.account_type, p.status.value, p.mode, str(len(p.orders)), reasons,
                      _money(p.buy_value), _money(p.sell_value), _money(p.realized_gain),
                      "; ".join(p.diagnostics)[:60])
    console.print(table)
    counts: dict[str, int] = {}
    for p in proposals:
        counts[p.status.value] = counts.get(p.status.value, 0) + 1
    console.print(f"{len(proposals)} proposals, {sum(len(p.orders) for p in proposals)} orders, "
                  f"{sum(p.tlh_harvests for p in proposals)} TLH harvests; "
                  + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                  + (f" (showing {limit}; --limit 0 shows all)" if limit and len(proposals) > limit else ""),
                  highlight=False)


def _decide(run: str, account_ids: tuple[str, ...], all_: bool, to: ProposalStatus, by: str, note: str) -> None:
    """Send the decision as the CLI's principal; exit 1 when a named proposal was refused.

    A decision applied before is a no-op (exit 0), said on stderr.
    """
    from portfolio_manager import review

    if bool(account_ids) == all_:
        raise click.UsageError("name ACCOUNT_IDS, or --all (not both)")
    principal = _principal(by)
    engine, svc = _context()
    chosen = None if all_ else account_ids
    if to is ProposalStatus.APPROVED:
        result = review.approve(engine, svc.proposals, run, chosen, by=principal, note=note)
    else:
        result = review.reject(engine, svc.proposals, run, chosen, by=principal, reason=note)
    console.print(f"{to.value} by {principal.name}: {len(result.changed)}"
                  + (f", already done {len(result.already)}" if result.already else "")
                  + (f", refused {len(result.skipped)}" if result.skipped else ""), highlight=False)
    for reason in list(result.already.values())[:20]:
        click.echo(f"  already: {reason}", err=True)
    for account_id, reason in list(result.skipped.items())[:20]:
        click.echo(f"  refused: {reason if reason.startswith(account_id) else f'{account_id}: {reason}'}", err=True)
    if result.waiting:
        console.print(f"{len(result.waiting)} approval(s) counted that need a second person (four-eyes): "
                      + ", ".join(result.waiting[:10]), highlight=False)
    if to is ProposalStatus.APPROVED and result.changed:
        separate = [p for p in svc.proposals.get_many(run, result.changed) if not p.in_workflow]
        if separate:
            console.print(f"next: tradeflow pm submit {run} (for {len(separate)} submitted separately)")
        if len(separate) < len(result.changed):
            console.print(f"the workflows trade what has its approvals in the run's block (once nothing is left to "
                          f"decide, or at the cut-off; `tradeflow batches`): tradeflow pm review {run}")
    if result.skipped and not all_:
        sys.exit(1)  # a named proposal was refused: the reason is printed above


_BY = click.option("--by", default="", help="Optional: must name the CLI's principal (TRADEFLOW_PRINCIPAL), "
                   "who decides; nobody decides in another person's name.")


@pm.command("approve")
@click.argument("run")
@click.argument("account_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every proposal of RUN that can still be approved.")
@_BY
@click.option("--note", default="", help="Recorded with the decision.")
@rerun(safe=True, why="idempotent: an approval applied before is a no-op, exit 0, said on stderr")
def pm_approve(run: str, account_ids: tuple[str, ...], all_: bool, by: str, note: str) -> None:
    """Approve proposals of RUN (ACCOUNT_IDS, or --all), as the CLI's principal (role pm).

    A proposal of a rebalance is traded by its own workflow once the engine counted its
    approvals (one, or two by different people when its orders exceed the definition's
    four_eyes_over): in the run's block order per exchange, which closes when nothing of the
    run is left to decide, at the cut-off, or by `tradeflow batch ID --close`; an account
    traded on demand (`pm enqueue`) submits its own orders. Exit 1 when a named proposal is
    refused (no pm role, the same person twice, past the cut-off, decided otherwise), with the
    reason; an approval applied before is a no-op (exit 0).
    """
    _decide(run, account_ids, all_, ProposalStatus.APPROVED, by, note)


@pm.command("reject")
@click.argument("run")
@click.argument("account_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every proposal of RUN not yet submitted.")
@_BY
@click.option("--reason", "note", required=True, help="Why (recorded with the decision).")
@rerun(safe=True, why="idempotent: a rejection applied before is a no-op, exit 0, said on stderr")
def pm_reject(run: str, account_ids: tuple[str, ...], all_: bool, by: str, note: str) -> None:
    """Reject proposals of RUN (ACCOUNT_IDS, or --all) as the CLI's principal; a rebalance's workflow ends there."""
    _decide(run, account_ids, all_, ProposalStatus.REJECTED, by, note)


@pm.command("review")
@click.argument("run")
@click.option("--limit", default=50, show_default=True, help="Rows to show (0: all).")
@read_only
def pm_review(run: str, limit: int) -> None:
    """What of RUN still awaits a decision: approvals so far (who, when), approvals needed, cut-off."""
    from portfolio_manager.review import pending

    engine, svc = _context()
    waiting = pending(engine, svc.proposals, run)
    if not waiting:
        console.print(f"nothing awaits review in run {run} (`tradeflow pm proposals {run}` shows every proposal)")
        return
    table = Table("account", "region", "orders", "order value", "approvals", "needed", "cut-off", title=f"run {run}")
    for p in waiting[:limit or None]:
        approvals = ", ".join(f"{a['by']} {_when(a.get('at'))[11:16]}" for a in p.approvals) or "-"
        table.add_row(p.account_id, p.region, str(len(p.orders)), _money(p.order_value), approvals,
                      str(p.approvals_required), cutoff_text(p))
    console.print(table)
    four_eyes = sum(1 for p in waiting if p.approvals_required > 1)
    console.print(f"{len(waiting)} awaiting review ({four_eyes} need two approvals); "
                  f"next: tradeflow pm approve {run} ACCOUNT (as TRADEFLOW_PRINCIPAL)", highlight=False)


@pm.command("submit")
@click.argument("run")
@click.argument("account_ids", nargs=-1)
@click.option("--version", "version", default="production", show_default=True, help="submit-orders version or alias.")
@click.option("--watch/--no-watch", default=True, help="Follow the submissions until they are done.")
@rerun(safe=True, why="submitting is idempotent: each approved order reaches the brokerage once")
def pm_submit(run: str, account_ids: tuple[str, ...], version: str, watch: bool) -> None:
    """Send RUN's approved, separately submitted proposals to the brokerage (one submit-orders instance each).

    Proposals reviewed inside their workflow (the rebalances) are submitted by that workflow on
    approval; this command is for the others (invest-deposit, older rebalance versions).
    """
    from portfolio_manager import review

    principal = _principal()
    engine, svc = _context()
    _definitions(engine)
    result = review.submit(engine, svc.proposals, run, account_ids or None, version=version, by=principal)
    console.print(f"submitting {len(result.started)} proposals as run [bold]{result.submission_run}[/bold]"
                  + (f", skipped {len(result.skipped)}" if result.skipped else ""))
    for account_id, reason in list(result.skipped.items())[:20]:
        console.print(f"  {account_id}: {reason}", highlight=False)
    if watch and result.started:
        progress = show_progress(engine, result.submission_run)
        console.print(f"submitted: {progress.counts.get('succeeded', 0)}, failed: {progress.counts.get('failed', 0)}; "
                      f"receipts: tradeflow pm proposals {run} --status submitted")


# --------------------------------------------------------------------------- accounts


@click.group(cls=_Group)
@click.pass_context
def accounts(ctx: click.Context) -> None:
    """The book of accounts: seed a synthetic one, list and show accounts."""
    ctx.ensure_object(CliContext)  # as in the pm group


@accounts.command("seed")
@click.option("--count", default=2000, show_default=True, help="How many accounts.")
@click.option("--seed", "seed", default=7, show_default=True, help="Same seed, same book.")
@click.option("--date", "day", help="As-of date of prices and holdings (default: the last trading day).")
@click.option("--replace/--add", default=True, show_default=True, help="Clear the book first.")
@rerun(safe=True, why="the same seed writes the same book")
def accounts_seed(count: int, seed: int, day: str | None, replace: bool) -> None:
    """Write a seeded synthetic book (households, lots, trades, prices; ~2% broken accounts)."""

    _, svc = _context()
    if not isinstance(svc.book, RedisBook):
        raise click.UsageError("seeding writes the Redis book; unset TRADEFLOW_PM_BOOK_URL")
    as_of = _parse_date(day) or last_session()
    if replace:
        svc.book.clear()
    summary = seed_book(svc.book, count, seed, as_of)
    console.print(f"seeded {summary.count} accounts ({summary.by_region}) in {summary.households} households, "
                  f"{summary.lots} lots, {summary.trades} trades, as of {as_of} "
                  f"({summary.generate_seconds + summary.write_seconds:.1f} s)", highlight=False)
    console.print(f"broken on purpose: {len(summary.closed_accounts)} closed, "
                  f"{len(summary.missing_price_accounts)} holding an unpriced symbol", highlight=False)
    console.print(f"next: tradeflow pm run --date {as_of}")


def last_session() -> date:
    """The most recent day both the TSX and the NYSE traded, their open passed (now, or earlier)."""

    from portfolio_manager.calendars import is_trading_day, market_open  # pandas: imported on use

    now = datetime.now(UTC)
    day = now.date()
    for _ in range(20):
        if all(is_trading_day(day, x) for x in ("XTSE", "XNYS")) and all(
                market_open(day, x) + timedelta(minutes=5) <= now for x in ("XTSE", "XNYS")):
            return day
        day -= timedelta(days=1)
    raise RuntimeError("no common trading day of XTSE and XNYS in the last 20 days")


@accounts.command("list")
@click.option("--region", type=click.Choice(["CA", "US"]))
@click.option("--limit", default=50, show_default=True)
@click.option("--all", "all_", is_flag=True, help="Closed accounts too.")
@read_only
def accounts_list(region: str | None, limit: int, all_: bool) -> None:
    """Accounts of the book."""
    _, svc = _context()
    table = Table("id", "region", "type", "status", "model", "tlh", "linked")
    found = [a for a in svc.book.list_accounts(active_only=not all_) if region is None or a.region.value == region]
    for a in found[:limit]:
        table.add_row(a.id, a.region.value, a.type.value, a.status.value, a.model_id, "on" if a.tlh_enabled else "",
                      ", ".join(a.linked_account_ids))
    console.print(table)
    console.print(f"{len(found)} accounts")


@accounts.command("show")
@click.argument("account_id")
@click.option("--date", "day", help="As of (default: the last trading day).")
@read_only
def accounts_show(account_id: str, day: str | None) -> None:
    """One account: its holdings, cash and the household's trades of the last year."""
    _, svc = _context()
    holdings = svc.book.get_holdings(account_id, _parse_date(day) or last_session(), 365)
    a = holdings.account
    console.print(f"[bold]{a.id}[/bold] {a.region.value} {a.type.value} {a.status.value} model {a.model_id} "
                  f"tlh {'on' if a.tlh_enabled else 'off'} cash {_money(holdings.cash)}", highlight=False)
    table = Table("lot", "symbol", "quantity", "cost basis", "acquired")
    for lot in holdings.lots:
        table.add_row(lot.lot_id, lot.symbol, f"{lot.quantity:g}", _money(lot.cost_basis), str(lot.acquired_date))
    console.print(table)
    console.print(f"{len(holdings.trade_history)} trades in the household over the last 365 days")


__all__ = ["pm", "accounts", "last_session"]
