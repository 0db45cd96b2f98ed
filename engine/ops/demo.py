"""``tradeflow demo`` for the engine alone: a sample workflow over a few thousand instances."""

from __future__ import annotations

import collections
import re
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine.config import Settings
from engine.connections import state_url
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus
from engine.ops.fleet import Fleet, FleetSpec
from engine.ops.progress import show_progress
from engine.roles import declared_roles

console = Console()
#: The sample pipeline's actions, served by the demo's workers.
SAMPLE_MODULE = "engine.samples.actions"


def run_demo(count: int = 3000) -> None:
    """Start local workers, run ``count`` instances of the sample pipeline, print a summary.

    The demo is an edge: it reads the settings from the environment here, once."""
    from engine.app import build_engine  # celery: the CLI imports this module for every command

    settings = Settings.from_env()
    settings = settings.with_redis(state_url(settings, allow_start=True))
    engine = build_engine(settings)
    modules = [m for m in settings.service_modules if m != SAMPLE_MODULE] + [SAMPLE_MODULE]
    env = {**settings.child_env(), "TRADEFLOW_SERVICE_MODULES": ",".join(modules)}
    console.print(f"Redis: {settings.redis_url}")
    text = (Path(__file__).parent / "samples" / "pipeline.json").read_text()
    definition = load_definition(text, "sample-pipeline.json", roles=declared_roles(settings))
    version = engine.publish(definition, alias="production")
    console.print(f"published sample-pipeline version {version}")
    fleets = [FleetSpec("engine", "threads", 4), FleetSpec("sample_io", "threads", 8),
              FleetSpec("sample_cpu", "prefork", 2)]
    run = time.strftime("demo-%Y%m%d-%H%M%S")
    with Fleet(fleets, beat=True, env=env) as fleet:
        console.print("workers: " + ", ".join(map(str, fleets)) + f" (logs in {fleet.logdir})")
        started = time.monotonic()
        engine.start_many("sample-pipeline", ({"record_id": i} for i in range(count)), version="production",
                          run=run)
        progress = show_progress(engine, run, follow=True, timeout=600, console=console)
        elapsed = time.monotonic() - started
    instances = engine.list(run)
    steps = sum(i.seq - 1 for i in instances)
    reasons = collections.Counter(re.sub(r"\d+", "N", (i.error or {}).get("reason", "?"))
                                  for i in instances if i.status is InstanceStatus.FAILED)
    table = Table(title=f"run {run}", show_header=False)
    table.add_row("instances", str(progress.total))
    for status in ("succeeded", "failed", "running", "waiting", "awaiting", "paused", "cancelled"):
        if progress.counts[status]:
            table.add_row(status, str(progress.counts[status]))
    table.add_row("elapsed", f"{elapsed:.1f} s")
    table.add_row("steps applied", f"{steps} ({steps / elapsed:.0f} steps/s)")
    console.print(table)
    if reasons:
        console.print("failures by reason:")
        for reason, n in reasons.most_common(5):
            console.print(f"  {n:5d}  {reason}", highlight=False, markup=False)
        failed = next(i.id for i in instances if i.status is InstanceStatus.FAILED)
        console.print(f"inspect one: tradeflow inspect {failed}")
        console.print(f"retry them:  tradeflow retry --run {run}")
