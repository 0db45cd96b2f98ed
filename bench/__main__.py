"""``make bench``: the benchmarks, a table on the terminal and JSON under bench/results/."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import engine_overhead
from engine.config import Settings
from engine.embedded import resolve_redis_url


def main() -> None:
    """Run the benchmarks and record their figures."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--steps", type=int, default=5000, help="steps per measurement (default 5000)")
    parser.add_argument("--pool", default="prefork", help="worker pool of the bench queue")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    url = resolve_redis_url(Settings.from_env(), allow_start=True)
    console = Console()
    console.print(f"engine overhead: {args.steps} steps, pool {args.pool} x{args.concurrency}, Redis {url}")
    figures = engine_overhead.run(url, args.steps, args.pool, args.concurrency)
    table = Table("measurement", "steps/s", "engine ratio")
    table.add_row("bare Celery no-op tasks", f"{figures['bare_tasks_per_s']:.0f}",
                  f"{figures['ratio_engine_vs_bare']:.2f}")
    table.add_row("Celery chain of 5", f"{figures['chain_steps_per_s']:.0f}",
                  f"{figures['ratio_engine_vs_chain']:.2f}")
    table.add_row("engine, 5-step workflow", f"{figures['engine_steps_per_s']:.0f}", "1.00")
    console.print(table)
    out = Path(__file__).parent / "results" / "engine_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "cpus": __import__("os").cpu_count(),
                               "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures}, indent=2))
    console.print(f"written to {out}")


if __name__ == "__main__":
    main()
