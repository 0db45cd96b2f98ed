"""The step counters a worker keeps in memory and flushes to Redis: the fields they write, and a failed flush."""

from __future__ import annotations

from typing import Any

from engine.runtime.concerns.metrics import StepMetrics


def test_a_flush_writes_each_steps_outcome_and_duration_as_the_hashes_fields() -> None:
    sent: list[tuple[dict[str, int], dict[str, Any]]] = []
    ticks = [0.0]
    metrics = StepMetrics(lambda steps, seconds: sent.append((steps, seconds)), interval=5.0, clock=lambda: ticks[0])
    metrics.step("flow", "check", "applied", 0.02)
    metrics.step("flow", "check", "failed", 0.3)
    metrics.step("other", "check", "applied", 100.0)
    metrics.step("flow", "pay", "applied", 0.005)
    assert sent == []
    metrics.flush()
    assert sent == [(
        {"applied|flow|check": 1, "failed|flow|check": 1, "applied|other|check": 1, "applied|flow|pay": 1},
        {"check|0.025": 1.0, "check|0.5": 1.0, "check|+Inf": 1.0, "check|sum": 100.32, "check|count": 3.0,
         "pay|0.005": 1.0, "pay|sum": 0.005, "pay|count": 1.0},
    )]
    metrics.flush()  # nothing new: nothing sent
    assert len(sent) == 1


def test_a_failed_flush_keeps_the_counts_for_the_next() -> None:
    sent: list[tuple[dict[str, int], dict[str, Any]]] = []
    down = [True]

    def sink(steps: dict[str, int], seconds: dict[str, float]) -> None:
        if down[0]:
            raise ConnectionError("Redis down")
        sent.append((steps, seconds))

    metrics = StepMetrics(sink, interval=5.0, clock=lambda: 0.0)
    metrics.step("flow", "check", "applied", 0.02)
    metrics.flush()
    metrics.step("flow", "check", "applied", 0.04)
    down[0] = False
    metrics.flush()
    assert sent == [({"applied|flow|check": 2},
                     {"check|0.025": 1.0, "check|0.05": 1.0, "check|sum": 0.06, "check|count": 2.0})]
