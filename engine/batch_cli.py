"""``tradeflow batches`` and ``tradeflow batch ID``: the batches of gather nodes, for the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.table import Table

from engine.cli_context import cli_engine
from engine.cli_errors import read_only, rerun
from engine.cli_identity import cli_principal, no_by_option

console = Console()


def _when(seconds: float | None) -> str:
    return "" if seconds is None else datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


@click.command()
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
@read_only
def batches(limit: int) -> None:
    """Batches of gather nodes: status (open, closed, applied), members, close time and reason."""
    table = Table("batch", "status", "members", "close at (UTC)", "closed", "attempt")
    for batch in cli_engine().batches(limit):
        table.add_row(batch.id, batch.status, str(batch.members), _when(batch.close_at),
                      f"{_when(batch.closed_at)} {batch.close_reason or ''}".strip(), str(batch.attempt))
    console.print(table)
    console.print("one batch in full: `tradeflow batch ID`", highlight=False)


@click.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (contributions included).")
@click.option("--members/--no-members", default=True, help="List the members and what each contributed.")
@click.option("--close", "close_now", is_flag=True, help="Close the open batch now: its step runs at once.")
@no_by_option
@rerun(safe=True, why="it reads; with --close, a batch closes once (closing it again says it was not open)")
def batch(batch_id: str, as_json: bool, members: bool, close_now: bool) -> None:
    """One batch: its status and times, its members with their contributions and answers, its history.

    --close is recorded (batch history, audit log) as done by TRADEFLOW_PRINCIPAL (default: the OS user).
    """
    engine = cli_engine()
    if close_now:
        if engine.close_batch(batch_id, by=cli_principal()):
            console.print(f"closed {batch_id}: its batch step is on its way", highlight=False)
        else:
            console.print(f"{batch_id} was not open (status {engine.batch(batch_id).batch.status})", highlight=False)
        return
    view = engine.batch(batch_id)
    if as_json:
        click.echo(json.dumps(view.to_dict(), default=str))
        return
    b = view.batch
    console.print(f"[bold]{b.id}[/bold]  gather node {b.node} of {b.workflow} v{b.version} "
                  f"→ {b.service}.{b.action}", highlight=False)
    console.print(f"status [bold]{b.status}[/bold], {b.members} members from run(s) {', '.join(view.runs)}; "
                  f"close at {_when(b.close_at)}" + (f", closed {_when(b.closed_at)} ({b.close_reason})"
                                                      if b.closed_at else "") + f", attempt {b.attempt}"
                  + (f"; its step waits for a limit ({b.waiting_for})" if b.waiting_for else ""),
                  highlight=False)
    answers = (b.answer or {}).get("members") or {}
    if b.answer and "error" in b.answer:
        console.print(f"[red]failed[/red] {b.answer['error']}", highlight=False, markup=False)
    if members:
        table = Table("instance", "contribution", "answer")
        for iid, contribution in view.contributions:
            mine = answers.get(iid) or {}
            table.add_row(iid, json.dumps(contribution)[:70],
                          (mine.get("transition") or mine.get("error") or "")[:60])
        console.print(table)
    history = Table("event", "attempt", "detail", "ms", "worker")
    for act in view.activities:
        detail = act.get("error") or act.get("reason") or ""
        if act.get("transitions"):
            detail = " ".join(f"{k}={v}" for k, v in act["transitions"].items())
        if act["event"] == "applied":
            detail = f"moved={act.get('moved')} failed={act.get('failed')}"
        ms = (float(act.get("ended_at", act.get("at", 0))) - float(act.get("started_at", act.get("at", 0)))) * 1000
        history.add_row(act["event"], str(act.get("attempt", "")), str(detail)[:80], f"{ms:.1f}",
                        str(act.get("worker", act.get("by", ""))))
    console.print(history)
