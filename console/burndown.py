"""Run burn-down: samples of remaining instances (neither finished, awaiting review nor gathering) over time,
the rate, the projection, the chart.

Cheap by design: a thread of the console process samples the progress of the newest live
runs every few seconds (``TRADEFLOW_CONSOLE_SAMPLE_SECONDS``, one SCARD per status per run)
and appends ``[time, remaining, finished]`` to a capped Redis list per run (expiring a retention
after its last sample, as the run's own keys do); the fleet's
applied-step counter (from the metrics hashes) is sampled the same way for steps per second.
History therefore exists while a console runs; without samples the chart draws the line
from the run's start (everything remaining) to now. The projection is the current rate over
the last minute of samples, extrapolated to zero remaining.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from console.console_keys import ConsoleKeys
from engine.api import Engine, RunProgress
from engine.errors import TradeflowError

log = logging.getLogger(__name__)

MAX_SAMPLES = 2000
#: How long a run's samples are kept after its last one when not told (the engine's default retention).
DEFAULT_RETENTION_SECONDS = 14 * 86400
WINDOW_SECONDS = 60.0
RUNS_SAMPLED = 10


@dataclass(frozen=True)
class Burndown:
    """A run's samples and what they project."""

    points: list[tuple[float, int]]
    total: int
    remaining: int
    rate: float | None  # instances finished per second, recent
    projected: float | None  # when the run should be done at that rate (epoch seconds)
    deadline: float | None
    now: float

    @property
    def late(self) -> bool:
        """True while the projection passes the deadline (or the deadline passed with work left)."""
        if self.deadline is None or self.remaining == 0:
            return False
        if self.now > self.deadline:
            return True
        return self.projected is None or self.projected > self.deadline


def _rate(points: list[tuple[float, int]], now: float) -> float | None:
    if len(points) < 2:
        return None
    recent = [p for p in points if p[0] >= points[-1][0] - WINDOW_SECONDS]
    first = recent[0] if len(recent) >= 2 else points[-2]
    last = points[-1]
    if last[0] <= first[0]:
        return None
    return max(first[1] - last[1], 0) / (last[0] - first[0])


class BurndownStore:
    """Burn-down samples in Redis (console keys) and the projection read from them."""

    def __init__(self, client: Any, keys: ConsoleKeys, clock: Any = time.time,
                 retention_seconds: int = DEFAULT_RETENTION_SECONDS) -> None:
        self.client = client
        self.keys = keys
        self.clock = clock
        #: A run's samples expire this long after its last sample (the engine's retention).
        self.retention_seconds = int(retention_seconds)

    def sample(self, progress: RunProgress) -> None:
        """Append one sample of ``progress``."""
        key = self.keys.burndown(progress.run)
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(key, json.dumps([round(self.clock(), 3), _remaining(progress), progress.finished]))
        pipe.ltrim(key, -MAX_SAMPLES, -1)
        pipe.expire(key, self.retention_seconds)
        pipe.execute()

    def burndown(self, progress: RunProgress) -> Burndown:
        """The run's burn-down now."""
        now = self.clock()
        remaining = _remaining(progress)
        points = [(float(t), int(r)) for t, r, _ in (json.loads(x) for x in self.client.lrange(
            self.keys.burndown(progress.run), 0, -1))]
        if progress.created_at is not None and (not points or points[0][0] > progress.created_at):
            points.insert(0, (progress.created_at, progress.total))
        if not points or points[-1][1] != remaining or remaining:
            points.append((now, remaining))
        rate = _rate(points, now)
        projected = None
        if remaining == 0:
            projected = None
        elif rate:
            projected = now + remaining / rate
        return Burndown(points, progress.total, remaining, rate, projected, progress.deadline, now)

    def sample_steps(self, applied: int) -> None:
        """Append the fleet's applied-step count."""
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(self.keys.steps_samples, json.dumps([round(self.clock(), 3), applied]))
        pipe.ltrim(self.keys.steps_samples, -MAX_SAMPLES, -1)
        pipe.execute()

    def steps_per_second(self) -> float | None:
        """The fleet's applied steps per second over the last minute of samples."""
        raw = [json.loads(x) for x in self.client.lrange(self.keys.steps_samples, -60, -1)]
        points = [(float(t), -int(n)) for t, n in raw]  # negated: _rate measures a decrease
        return _rate(points, self.clock())


class Sampler(threading.Thread):
    """Samples the newest live runs and the fleet's step count every ``interval`` seconds."""

    def __init__(self, engine: Engine, store: BurndownStore, interval: float) -> None:
        super().__init__(name="burndown-sampler", daemon=True)
        self.engine = engine
        self.store = store
        self.interval = interval
        self.stopped = threading.Event()
        self._done: set[str] = set()

    def run(self) -> None:
        """Sample until stopped; errors are logged, never fatal."""
        while not self.stopped.wait(self.interval):
            try:
                self.sample_once()
            except Exception as exc:
                log.warning("burn-down sample failed: %s", exc)

    def sample_once(self) -> None:
        """One round: every live run among the newest, plus one last sample when a run finishes."""
        for run in self.engine.runs(limit=RUNS_SAMPLED):
            if run in self._done:
                continue
            try:
                progress = self.engine.progress(run)
            except TradeflowError:
                continue
            self.store.sample(progress)
            if progress.done:
                self._done.add(run)
        stats = self.engine.step_metrics()
        self.store.sample_steps(sum(n for (outcome, _, _), n in stats.steps.items() if outcome == "applied"))

    def stop(self) -> None:
        """Stop after the current round."""
        self.stopped.set()


# -------------------------------------------------------------------------------- the chart


def _remaining(progress: RunProgress) -> int:
    """What the workers still have to move: neither finished, nor awaiting a person, nor gathering
    in a block that has not closed yet (a planned run is 0, and so is one whose approved
    accounts all wait for their block: neither is late for the workers)."""
    parked = progress.awaiting + progress.counts.get("gathering", 0)
    return max(progress.total - progress.finished - parked, 0)


def _clock(ts: float, zone: ZoneInfo, fmt: str = "%H:%M") -> str:
    return datetime.fromtimestamp(ts, zone).strftime(fmt)


def burndown_svg(chart: Burndown, zone: ZoneInfo, width: int = 640, height: int = 220) -> str:
    """The chart as inline SVG: remaining over time, the projection (dashed), the deadline (red)."""
    left, right, top, bottom = 48, 12, 12, 28
    start = chart.points[0][0]
    end = max(chart.now, chart.points[-1][0])
    if chart.projected:
        end = max(end, min(chart.projected, chart.now + 4 * max(chart.now - start, 60)))
    # The deadline is drawn where it falls unless it is far beyond the run (then it is named at the edge).
    deadline_inside = chart.deadline is not None and 0 <= chart.deadline - start <= 1.5 * max(end - start, 60)
    if deadline_inside and chart.deadline is not None:
        end = max(end, chart.deadline)
    span = max(end - start, 1.0)
    top_value = max(chart.total, 1)
    fmt = "%H:%M:%S" if span < 600 else "%H:%M"

    def x(t: float) -> float:
        return round(left + (t - start) / span * (width - left - right), 1)

    def y(v: float) -> float:
        return round(top + (1 - v / top_value) * (height - top - bottom), 1)

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="burn-down: {chart.remaining} of {chart.total} remaining">']
    for frac in (0, 0.5, 1):
        v = top_value * frac
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v)}" y2="{y(v)}" stroke="#e3e6ea"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4}" text-anchor="end" class="axis">{int(v)}</text>')
    for t, anchor in ((start, "start"), (start + span / 2, "middle"), (end, "end")):
        parts.append(f'<text x="{x(t)}" y="{height - 8}" text-anchor="{anchor}" class="axis">'
                     f'{_clock(t, zone, fmt)}</text>')
    line = " ".join(f"{x(t)},{y(v)}" for t, v in chart.points)
    parts.append(f'<polyline points="{line}" fill="none" stroke="#2563eb" stroke-width="2.5"/>')
    if chart.projected and chart.remaining:
        px = x(min(chart.projected, end))
        py = y(0) if chart.projected <= end else y(chart.remaining * (1 - (end - chart.now) /
                                                                        (chart.projected - chart.now)))
        parts.append(f'<line x1="{x(chart.now)}" y1="{y(chart.remaining)}" x2="{px}" y2="{py}" stroke="#2563eb" '
                     'stroke-dasharray="6 4" stroke-width="1.5"/>')
    day_fmt = "%H:%M" if chart.deadline and _clock(chart.deadline, zone, "%F") == _clock(chart.now, zone, "%F") \
        else "%b %d %H:%M"
    if chart.deadline and chart.deadline < start:
        parts.append(f'<text x="{width - right}" y="{top + 12}" text-anchor="end" class="deadline">'
                     f'deadline {_clock(chart.deadline, zone, day_fmt)} passed before the start</text>')
    elif chart.deadline and not deadline_inside:
        parts.append(f'<text x="{width - right}" y="{top + 12}" text-anchor="end" class="deadline">'
                     f'deadline {_clock(chart.deadline, zone, day_fmt)} →</text>')
    elif chart.deadline:
        dx = x(chart.deadline)
        parts.append(f'<line x1="{dx}" x2="{dx}" y1="{top}" y2="{height - bottom}" stroke="#dc2626" '
                     f'stroke-width="2"/><text x="{dx - 4}" y="{top + 12}" text-anchor="end" class="deadline">'
                     f'deadline {_clock(chart.deadline, zone)}</text>')
    parts.append("</svg>")
    return "".join(parts)
