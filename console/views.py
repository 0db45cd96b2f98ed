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
from console.paging import Page
from engine.api import Engine, RunProgress
from engine.instance import LIVE_STATUSES, Instance, InstanceStatus

#: How many instances a run page loads at most to count by node, group failures, or search one page.
SCAN_LIMIT = 5000
#: Runs per page of the runs page (each row draws a burn-down chart).
RUNS_PAGE = 20


@dataclass
class RunSummary:
    """One row of the runs page."""

    progress: RunProgress
    burndown: Burndown

    @property
    def run(self) -> str:
        """The run label."""
        return self.progress.run


def summaries(engine: Engine, store: BurndownStore, limit: int = RUNS_PAGE, offset: int = 0) -> list[RunSummary]:
    """A page of the newest runs with their burn-down (``offset`` runs skipped)."""
    out = []
    for run in engine.runs(limit=limit, offset=offset):
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


def search(engine: Engine, run: str, query: str, statuses: list[str] | None, limit: int = 100,
           after: str | None = None) -> Page[Instance]:
    """A page of the instances of ``run`` by id, from after ``after``: those whose id or a top-level
    data value contains ``query`` (all when empty). A search reads at most :data:`SCAN_LIMIT`
    instances per page; ``next`` then says where to go on."""
    query = query.strip().lower()
    if not query:
        found = engine.list(run, statuses or None, limit=limit + 1, after=after)
        more = len(found) > limit
        found = found[:limit]
        return Page(found, found[-1].id if more and found else None, limit)
    matches: list[Instance] = []
    cursor, scanned = after, 0
    while len(matches) < limit and scanned < SCAN_LIMIT:
        chunk = engine.list(run, statuses or None, limit=min(500, SCAN_LIMIT - scanned), after=cursor)
        if not chunk:
            return Page(matches, None, limit)
        for instance in chunk:
            cursor = instance.id
            scanned += 1
            if _matches(instance, query):
                matches.append(instance)
                if len(matches) == limit:
                    break
    return Page(matches, cursor, limit)


def _matches(instance: Instance, query: str) -> bool:
    return query in instance.id.lower() or any(
        query in str(v).lower() for v in instance.data.values() if not isinstance(v, dict | list))


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


#: Every status, in the order the status bars, count tables and filters show them.
STATUS_ORDER = [s.value for s in (InstanceStatus.RUNNING, InstanceStatus.WAITING, InstanceStatus.AWAITING,
                                  InstanceStatus.GATHERING, InstanceStatus.PAUSED, InstanceStatus.SUCCEEDED,
                                  InstanceStatus.FAILED, InstanceStatus.CANCELLED)]


@dataclass(frozen=True)
class RunState:
    """Where a run stands, in one word for its badge, with its colour and a note.

    ``key`` is one of: ``running`` (workers have work), ``planned`` (every live instance awaits
    a person), ``gathering`` (approved instances wait for their block; none for workers),
    ``done`` (all terminal, none failed), ``done_with_failures``, ``failed`` (all terminal, none
    succeeded, some failed), ``cancelled`` (all cancelled).
    """

    key: str
    label: str
    #: css class: ok (green), warn (amber), bad (red), info (neutral).
    tone: str
    note: str = ""


def run_state(progress: RunProgress) -> RunState:
    """The state of a run from its counts (a run whose instances all failed is never green)."""
    counts, total = progress.counts, progress.total
    failed = counts.get("failed", 0)
    succeeded = counts.get("succeeded", 0)
    gathering = counts.get("gathering", 0)
    if progress.done:
        if failed and not succeeded:
            return RunState("failed", "failed", "bad", f"all {total} ended without success ({failed} failed)")
        if failed:
            return RunState("done_with_failures", f"done, {failed} failed", "warn",
                            f"{succeeded} succeeded, {failed} failed")
        if not succeeded:
            return RunState("cancelled", "cancelled", "info", f"all {total} cancelled")
        return RunState("done", "done", "ok")
    parked = progress.finished + progress.awaiting + gathering >= total > 0
    notes = [f"{progress.awaiting} await review"] if progress.awaiting else []
    notes += [f"{gathering} gathering in blocks"] if gathering else []
    notes += [f"{failed} failed"] if failed else []
    if parked and gathering:
        return RunState("gathering", "gathering", "info", ", ".join(notes))
    if parked:
        return RunState("planned", "planned", "ok" if not failed else "warn", ", ".join(notes))
    return RunState("running", "running", "info", ", ".join(notes))
