"""``/metrics``: Prometheus text format, rendered from Redis by a custom collector at scrape time.

| metric | type | labels | meaning |
|---|---|---|---|
| ``tradeflow_instances`` | gauge | run, status | instances of each of the 20 newest runs by status |
| ``tradeflow_run_deadline_timestamp_seconds`` | gauge | run | a run's deadline (runs that have one) |
| ``tradeflow_run_info`` | gauge | run, shadow | 1 per run; ``shadow="true"`` for a run of shadow instances |
| ``tradeflow_steps_total`` | counter | workflow, node, outcome | steps: applied, retry, failed, noop, skipped |
| ``tradeflow_step_duration_seconds`` | histogram | node | time of one step (action call and state change) |
| ``tradeflow_queue_depth`` | gauge | queue | messages waiting in a service queue (all priorities) |
| ``tradeflow_queue_oldest_age_seconds`` | gauge | queue | age of the oldest waiting message |
| ``tradeflow_timers_due`` | gauge | | waits and retry backoffs due but not yet moved on by a tick |

Step counts are flushed by each worker process every 5 s (:mod:`engine.metrics`), so they lag
by up to that much; a killed process loses at most its last 5 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry

from console.web import context
from engine.api import Engine
from engine.errors import TradeflowError

router = APIRouter()
RUNS = 20


class EngineCollector:
    """Reads the engine's state and flushed step metrics at each scrape."""

    def __init__(self, engine: Engine, queues: list[str]) -> None:
        self.engine = engine
        self.queues = queues

    def collect(self) -> Iterator[Any]:
        """Yield every metric family (see the module docstring)."""
        instances = GaugeMetricFamily("tradeflow_instances", "Instances of a run by status", labels=["run", "status"])
        deadlines = GaugeMetricFamily("tradeflow_run_deadline_timestamp_seconds", "When a run should be done by",
                                      labels=["run"])
        info = GaugeMetricFamily("tradeflow_run_info", "A run, and whether it is a run of shadow instances",
                                 labels=["run", "shadow"])
        for run in self.engine.runs(limit=RUNS):
            try:
                progress = self.engine.progress(run)
            except TradeflowError:
                continue
            info.add_metric([run, "true" if progress.shadow else "false"], 1)
            for status, count in sorted(progress.counts.items()):
                instances.add_metric([run, status], count)
            if progress.deadline:
                deadlines.add_metric([run], progress.deadline)
        yield instances
        yield deadlines
        yield info
        stats = self.engine.step_metrics()
        steps = CounterMetricFamily("tradeflow_steps", "Steps run by the workers by outcome",
                                    labels=["workflow", "node", "outcome"])
        for (outcome, workflow, node), count in sorted(stats.steps.items()):
            steps.add_metric([workflow, node, outcome], count)
        yield steps
        durations = HistogramMetricFamily("tradeflow_step_duration_seconds", "Duration of one step", labels=["node"])
        for node, (buckets, total, _) in sorted(stats.durations.items()):
            durations.add_metric([node], [(bound, count) for bound, count in buckets], total)
        yield durations
        depth = GaugeMetricFamily("tradeflow_queue_depth", "Messages waiting in a service queue", labels=["queue"])
        age = GaugeMetricFamily("tradeflow_queue_oldest_age_seconds", "Age of the oldest waiting message",
                                labels=["queue"])
        for queue, (count, oldest) in sorted(self.engine.queue_stats(self.queues).items()):
            depth.add_metric([queue], count)
            age.add_metric([queue], oldest or 0.0)
        yield depth
        yield age
        timers = GaugeMetricFamily("tradeflow_timers_due", "Waits and backoffs due, not yet moved on")
        timers.add_metric([], self.engine.timers_due())
        yield timers


def render_metrics(engine: Engine, queues: list[str]) -> bytes:
    """The metrics page's text."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine, queues))  # type: ignore[arg-type]
    return generate_latest(registry)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus scrape: ``Authorization: Bearer $TRADEFLOW_METRICS_TOKEN`` (or any signed-in user)."""
    ctx = context(request)
    return Response(render_metrics(ctx.engine, ctx.queues), media_type=CONTENT_TYPE_LATEST)
