"""What the operators' pages show, computed from the engine (no HTTP here): run summaries,
nodes and failures of a run, an instance's path, definition diffs."""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from console.burndown import Burndown, BurndownStore
from engine.api import Engine, RunProgress
from engine.model import LIVE_STATUSES, Instance, InstanceStatus

#: How many instances a run page loads at most to count by node, group failures, or search.
SCAN_LIMIT = 5000


@dataclass
class RunSummary:
    """One row of the runs page."""

    progress: RunProgress
    burndown: Burndown

    @property
    def run(self) -> str:
        """The run label."""
        return self.progress.run


def summaries(engine: Engine, store: BurndownStore, limit: int = 20) -> list[RunSummary]:
    """The newest runs with their burn-down."""
    out = []
    for run in engine.runs(limit=limit):
        progress = engine.progress(run)
        out.append(RunSummary(progress, store.burndown(progress)))
    return out


def reason_kind(reason: str) -> str:
    """A failure reason with its particulars (quoted names, numbers, ids) blanked, to group alike ones."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason or "")
    text = re.sub(r"\b[A-Z]{2}-?\d[\w-]*\b", "…", text)
    return re.sub(r"\d+(\.\d+)?", "N", text)[:160]


def failure_groups(instances: list[Instance]) -> list[tuple[str, list[Instance]]]:
    """Failed instances grouped by reason kind, biggest group first."""
    groups: dict[str, list[Instance]] = {}
    for instance in instances:
        error = instance.error or {}
        key = f"{error.get('node', instance.node)}: {reason_kind(str(error.get('reason', '')))}"
        groups.setdefault(key, []).append(instance)
    return sorted(groups.items(), key=lambda item: -len(item[1]))


def live_nodes(engine: Engine, run: str) -> list[tuple[str, str, int]]:
    """(node, status, count) of the run's live instances."""
    counts = Counter((i.node, i.status.value) for i in engine.list(run, LIVE_STATUSES, limit=SCAN_LIMIT))
    return sorted(((n, s, c) for (n, s), c in counts.items()), key=lambda t: -t[2])


def search(engine: Engine, run: str, query: str, statuses: list[str] | None, limit: int = 200) -> list[Instance]:
    """Instances of ``run`` whose id or a top-level data value contains ``query`` (all when empty)."""
    query = query.strip().lower()
    found = engine.list(run, statuses or None, limit=None if query else limit)
    if query:
        found = [i for i in found if query in i.id.lower()
                 or any(query in str(v).lower() for v in i.data.values() if not isinstance(v, dict | list))]
    return sorted(found, key=lambda i: (i.status.value != "failed", i.id))[:limit]


def path_of(activities: list[dict[str, Any]]) -> list[str]:
    """Nodes an instance went through, in order (from its activity records)."""
    seen: list[str] = []
    for act in activities:
        for name in (act.get("node"), *(act.get("via") or []), act.get("next")):
            if name and name not in seen:
                seen.append(name)
    return seen


def editable_context(instance: Instance) -> str:
    """The instance's context as the JSON an operator edits before a retry."""
    return json.dumps(instance.context, indent=2, sort_keys=True)


def definition_diff(old: dict[str, Any], new: dict[str, Any], old_label: str, new_label: str) -> list[tuple[str, str]]:
    """A unified diff of two definitions' JSON as (kind, line): kind is add, del, hunk or same."""
    a = json.dumps(old, indent=2, sort_keys=True).splitlines()
    b = json.dumps(new, indent=2, sort_keys=True).splitlines()
    out = []
    for line in difflib.unified_diff(a, b, old_label, new_label, lineterm="", n=3):
        kind = ("hunk" if line.startswith("@@") else "add" if line.startswith("+") else
                "del" if line.startswith("-") else "same")
        out.append((kind, line))
    return out


STATUS_ORDER = [s.value for s in (InstanceStatus.RUNNING, InstanceStatus.WAITING, InstanceStatus.AWAITING,
                                  InstanceStatus.PAUSED, InstanceStatus.SUCCEEDED, InstanceStatus.FAILED,
                                  InstanceStatus.CANCELLED)]
