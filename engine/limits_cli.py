"""``tradeflow limits``: the shared rate and concurrency limits, listed and set at run time."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from engine.cli_context import cli_engine
from engine.cli_errors import read_only, rerun
from engine.cli_identity import cli_principal

console = Console()


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@read_only
def limits(ctx: click.Context, as_json: bool) -> None:
    """Rate and concurrency limits: settings, calls free now, parked instances, slot holders."""
    if ctx.invoked_subcommand is not None:
        return
    states = cli_engine().limits()
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in states], indent=2))
        return
    table = Table("limit", "kind", "rate", "free now", "parked", "holders", "waits", "override")
    for s in states:
        rate = f"{s.per_second:g}/s burst {s.burst}" if s.kind == "rate" else f"max {s.max}"
        table.add_row(s.name, s.kind, rate, str(s.tokens), str(s.parked),
                      str(s.holders) if s.kind == "concurrency" else "", str(s.waits), "yes" if s.override else "")
    console.print(table)
    console.print("change one now: `tradeflow limits set NAME --per-second N [--burst B]` (or --max N)",
                  highlight=False)


@limits.command("set")
@click.argument("name")
@click.option("--per-second", type=float, help="Calls a second on average.")
@click.option("--burst", type=int, help="The most calls at once (default: --per-second rounded up).")
@click.option("--max", "maximum", type=int, help="A concurrency pool's size (pool names: `tradeflow limits`).")
@rerun(safe=True, why="it sets the same override again")
def limits_set(name: str, per_second: float | None, burst: int | None, maximum: int | None) -> None:
    """Override limit NAME for every worker at once, without a publish (stored in Redis).

    Recorded in the audit log as TRADEFLOW_PRINCIPAL (as the console's Limits page records its admin)."""
    state = cli_engine().set_limit(name, per_second=per_second, burst=burst, maximum=maximum, by=cli_principal())
    what = f"{state.per_second:g}/s burst {state.burst}" if maximum is None else f"max {state.max}"
    console.print(f"{name}: {what} (until `tradeflow limits clear {name}`)", highlight=False)


@limits.command("clear")
@click.argument("name")
@rerun(safe=True, why="clearing twice leaves no override, as once")
def limits_clear(name: str) -> None:
    """Drop the override of NAME: the definitions' settings apply again."""
    cli_engine().clear_limit(name, by=cli_principal())
    console.print(f"{name}: back to the definitions' settings", highlight=False)
