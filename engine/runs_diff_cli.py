"""How ``tradeflow runs diff A B`` prints a run diff: a summary and a table, or the JSON document."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from engine.runs_diff import RunDiff

#: At most this many keys are listed in the table (``--json`` has them all).
SHOWN = 50


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def print_diff(diff: RunDiff, as_json: bool, console: Console) -> None:
    """Print ``diff`` to ``console``: its JSON document, or a summary line and the changed keys."""
    if as_json:
        click.echo(json.dumps(diff.to_dict(), default=str))
        return
    s = diff.summary
    console.print(f"{diff.a} → {diff.b}: {s['keys']} paired by {diff.key}, compared at {diff.path}: "
                  f"{s['equal']} equal, {s['changed']} changed, {s['only_a']} only in {diff.a}, "
                  f"{s['only_b']} only in {diff.b}", highlight=False)
    table = Table(diff.key_name, "change", "field", diff.a, diff.b)
    shown = 0
    for item in diff.items:
        if item.change == "equal" or shown >= SHOWN:
            continue
        shown += 1
        if not item.fields:
            table.add_row(item.key, item.change, "", item.a_instance or "", item.b_instance or "")
        for index, change in enumerate(item.fields[:5]):
            table.add_row(item.key if index == 0 else "", item.change if index == 0 else "", change.field or "·",
                          _short(change.a), _short(change.b))
    if shown:
        console.print(table)
    hidden = sum(1 for item in diff.items if item.change != "equal") - shown
    if hidden > 0:
        console.print(f"… and {hidden} more (--json lists them all)")
