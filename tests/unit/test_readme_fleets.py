"""The fleet sizes the README and the documentation site give agree with what ``tradeflow workers`` starts:
the split layout's sizes with ``service_fleets``, the default with one combined solo process per core
and a filler per two cores."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from engine.cli import _load_plugins_only
from engine.ops.fleet import FILLER_NICE, all_queues, default_fleets, service_fleets

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_fleet_size_in_the_docs_is_the_one_of_the_split_layout() -> None:
    _load_plugins_only()
    started = {s.queue: (s.pool, s.concurrency) for s in service_fleets()}
    said, commands_seen, prose_seen = [], 0, 0
    for page in PAGES:
        text = page.read_text()
        commands = re.findall(r"celery -A engine\.worker worker -Q (\w+)\s+-P (\w+) -c (\d+)", text)
        prose = re.findall(r"`(\w+)` \((threads|prefork) \u00d7(\d+)", text)  # the multiplication sign
        commands_seen, prose_seen = commands_seen + len(commands), prose_seen + len(prose)
        said += [(page.name, queue, (pool, int(n))) for queue, pool, n in commands + prose]
    assert commands_seen >= 3 and prose_seen >= 3
    wrong = [(page, queue, size, started.get(queue)) for page, queue, size in said if started.get(queue) != size]
    assert not wrong, f"the docs say (page, queue, size, tradeflow workers starts): {wrong}"


def test_tradeflow_workers_starts_one_combined_solo_process_per_core_as_the_docs_say(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _load_plugins_only()
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    specs = default_fleets()
    assert [(s.pool, s.concurrency, s.nice) for s in specs] == [("solo", 1, 0)] * 4 + [("solo", 1, FILLER_NICE)] * 2
    assert all(s.queues == all_queues() for s in specs)
    assert {"engine", "portfolio_manager", "order_calc"} <= set(all_queues())
    page = (ROOT / "docs" / "workers.md").read_text()
    combined = re.findall(r"celery -A engine\.worker worker -Q ([\w,]+) -P (\w+) -c (\d+)", page)
    assert (",".join(all_queues()), "solo", "1") in combined
