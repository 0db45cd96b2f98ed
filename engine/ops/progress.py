"""A run's progress drawn as a live bar in the terminal (the CLI's ``runs RUN`` and the demos)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from engine.api import Engine, RunProgress


def show_progress(engine: Engine, run: str, follow: bool = True, timeout: float = 24 * 3600,
                  console: Console | None = None) -> RunProgress:
    """Draw a run's progress bar until it is done or planned (the rest awaits signals), or once; the last progress."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, console=console or Console(), transient=False) as bar:
        task = bar.add_task(run, total=1, detail="")
        deadline = time.monotonic() + timeout
        while True:
            p = engine.progress(run)
            detail = " ".join(f"{s}={p.counts[s]}" for s in ("running", "waiting", "awaiting", "gathering", "paused",
                                                             "failed") if p.counts[s])
            bar.update(task, total=p.total, completed=p.finished + p.awaiting, detail=f"{p.phase} {detail}")
            if not follow or p.settled or time.monotonic() > deadline:
                return p
            time.sleep(0.25)


__all__ = ["show_progress"]
