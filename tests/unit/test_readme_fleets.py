"""The README's fleet sizes agree with what ``tradeflow workers`` starts (``default_fleets``)."""

from __future__ import annotations

import re
from pathlib import Path

from engine.cli import _load_plugins_only
from engine.ops.fleet import default_fleets

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_fleet_size_in_the_readme_is_the_one_tradeflow_workers_starts() -> None:
    _load_plugins_only()
    started = {s.queue: (s.pool, s.concurrency) for s in default_fleets()}
    text = README.read_text()
    commands = re.findall(r"celery -A engine\.worker worker -Q (\w+)\s+-P (\w+) -c (\d+)", text)
    prose = re.findall(r"`(\w+)` \((threads|prefork) \u00d7(\d+)", text)  # the multiplication sign
    assert len(commands) >= 3 and len(prose) >= 3
    said = [(queue, (pool, int(n))) for queue, pool, n in commands + prose]
    wrong = [(queue, size, started.get(queue)) for queue, size in said if started.get(queue) != size]
    assert not wrong, f"README says (queue, size, tradeflow workers starts): {wrong}"
