"""``tradeflow pm shadow`` and ``tradeflow pm diff``: try a version on today's book, and see what it changes.

\b
    tradeflow pm shadow --version canary [--date D] [--run LABEL]    a shadow of the morning
    tradeflow pm shadow --definition my-rebalance-ca.json           a file not yet published
    tradeflow pm diff RUN_A RUN_B [--json] [--limit N]              what B trades differently from A

Added to the ``pm`` group by :mod:`portfolio_manager.plugin`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from engine.cli_errors import read_only, rerun
from engine.ops.progress import show_progress
from portfolio_manager.cli import engine_and_services, publish_definitions
from portfolio_manager.diff import AccountDiff, PmDiff, diff_runs

console = Console()


@click.command("shadow")
@click.option("--version", "version", default="canary", show_default=True,
              help="The version or alias of the rebalance definitions to try.")
@click.option("--definition", "definition", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A definition file not yet published: validated, published under the shadow-only alias "
                   "'shadow', and run (its region's accounts only).")
@click.option("--date", "day", help="Trading day (YYYY-MM-DD); default today.")
@click.option("--run", "run", help="Run label (default shadow-<date>-<version>).")
@click.option("--limit", type=int, help="At most this many accounts.")
@click.option("--watch/--no-watch", default=True, help="Follow the shadow run until every account stopped.")
@rerun(safe=True, why="accounts already started in the shadow run are not started again")
def pm_shadow(version: str, definition: Path | None, day: str | None, run: str | None, limit: int | None,
              watch: bool) -> None:
    """A shadow of the morning on today's book: another version, never touching production."""
    from datetime import date

    from portfolio_manager.daily import today_in  # celery: imported on use
    from portfolio_manager.shadow import start_shadow

    try:
        run_date = date.fromisoformat(day) if day else today_in()
    except ValueError:
        raise click.BadParameter(f"{day!r} is not a date; use YYYY-MM-DD") from None
    engine, svc = engine_and_services()
    publish_definitions(engine)
    started = start_shadow(engine, svc.book, run_date, version=version, definition=definition, run=run, limit=limit)
    for region, reason in started.skipped_regions.items():
        console.print(f"[yellow]{region} skipped:[/yellow] {reason}", highlight=False)
    console.print(f"shadow run [bold]{started.run}[/bold]: started " +
                  (", ".join(f"{n} {w} v{started.versions.get(w)}" for w, n in started.started.items()) or "nothing")
                  + (f" ({started.already_started} already started)" if started.already_started else ""),
                  highlight=False)
    if watch and (sum(started.started.values()) or started.already_started):
        show_progress(engine, started.run, console=console)
    console.print(f"next: tradeflow pm diff <production run> {started.run}", highlight=False)


def _side(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if isinstance(value, float) else str(value)


def _pair(item: AccountDiff, name: str) -> str:
    a, b = (getattr(item.a, name) if item.a else None), (getattr(item.b, name) if item.b else None)
    return _side(a) if a == b else f"{_side(a)} → {_side(b)}"


def _orders(item: AccountDiff) -> str:
    parts = [f"+{c.side} {c.b:g} {c.symbol}" for c in item.added]
    parts += [f"-{c.side} {c.a:g} {c.symbol}" for c in item.removed]
    parts += [f"{c.side} {c.symbol} {c.a:g}→{c.b:g}" for c in item.changed]
    return ", ".join(parts[:4]) + (f" (+{len(parts) - 4})" if len(parts) > 4 else "")


def print_pm_diff(diff: PmDiff, limit: int) -> None:
    """The summary, the totals and the biggest changes as tables."""
    s, t = diff.summary(), diff.totals()
    console.print(f"{diff.a} → {diff.b}: {s['accounts']} accounts: {s['equal']} equal, {s['changed']} changed "
                  f"({s['outcome_changed']} changed outcome), {s['only_a']} only in {diff.a}, "
                  f"{s['only_b']} only in {diff.b}", highlight=False)
    totals = Table("total", diff.a, diff.b)
    totals.add_row("orders", str(t["orders"]["a"]), str(t["orders"]["b"]))
    for name in ("traded_value", "realized_gain", "tlh_harvests", "cash_after", "drift_after_mean",
                 "drift_after_max"):
        totals.add_row(name.replace("_", " "), _side(t[name]["a"]), _side(t[name]["b"]))
    console.print(totals)
    console.print(f"orders added {t['orders_added']}, removed {t['orders_removed']}, changed {t['orders_changed']}"
                  + "".join(f"; {move}: {n}" for move, n in t["outcome_changes"].items()), highlight=False)
    changed = [item for item in diff.accounts if item.change != "equal"]
    if not changed:
        return
    table = Table("account", "change", "outcome", "orders", "traded value", "drift after", "cash left")
    for item in changed[:limit]:
        outcome = _pair(item, "outcome") if item.a and item.b else (item.a or item.b).outcome  # type: ignore[union-attr]
        reason = (item.b.reason if item.b and item.b.reason else item.a.reason if item.a else "") or ""
        table.add_row(item.account_id, item.change, outcome + (f" ({reason[:40]})" if reason else ""),
                      _orders(item), _pair(item, "traded_value"), _pair(item, "drift_after"), _pair(item, "cash_after"))
    console.print(table)
    if len(changed) > limit:
        console.print(f"… and {len(changed) - limit} more (--json lists them all)")


@click.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "as_json", is_flag=True, help="The whole diff as one JSON document.")
@click.option("--limit", default=30, show_default=True, help="Accounts listed (biggest changes first).")
@read_only
def pm_diff(run_a: str, run_b: str, as_json: bool, limit: int) -> None:
    """What RUN_B trades differently from RUN_A, account by account, biggest changes first."""
    engine, _svc = engine_and_services()
    diff = diff_runs(engine, run_a, run_b)
    if as_json:
        click.echo(json.dumps(diff.to_dict()))
        return
    print_pm_diff(diff, limit)


COMMANDS = (pm_shadow, pm_diff)

__all__ = ["COMMANDS", "pm_diff", "pm_shadow", "print_pm_diff"]
