"""Starting instances: ``Engine.start_many`` and the daily start (what ``tradeflow pm run`` does), no workers.

In a sandbox of its own on the shared Redis (:mod:`bench.sandbox`), deleted after:

1. publish the definitions (``rebalance-us`` at ``production``) and warm up (a small run: the
   scripts loaded, the validator and the expressions compiled);
2. ``start_many`` of N instances of ``rebalance-us`` with the data the daily start gives them
   (account, the last session, the review's cut-off; waiting for the open, which is past:
   each instance passes its wait at once, and its first step's message is pushed with it by
   the same script, as the broker is the state's Redis) — timed alone;
3. unless ``daily`` is off: seed a book of N accounts and time ``start_daily_rebalance``
   (list the book's active accounts, look up which ids exist, ``start_many`` per region):
   the ``tradeflow pm run`` path.

Figures per measurement: instances/s and CPU ms per instance of the starting process and of
Redis (INFO ``used_cpu_*``: the whole server's, so whatever else used the shared Redis
meanwhile is in it). Nothing asserts a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from bench.cpu import redis_cpu_seconds, self_cpu_seconds
from bench.sandbox import Sandbox
from engine.api import StartItem

WORKFLOW = "rebalance-us"
WARM_UP = 200


def measure(client: redis.Redis, count: Callable[[], int]) -> dict[str, Any]:
    """Wall time and CPU (this process, Redis) of ``count()``, which returns the instances it started."""
    cpu, server, began = self_cpu_seconds(), redis_cpu_seconds(client), time.perf_counter()
    started = count()
    wall = time.perf_counter() - began
    cpu, server = self_cpu_seconds() - cpu, redis_cpu_seconds(client) - server
    per = max(started, 1)
    return {"instances": started, "seconds": round(wall, 3),
            "instances_per_s": round(started / wall) if wall else None,
            "cpu_ms_per_instance": {"starting process": round(cpu * 1000 / per, 4),
                                    "redis-server (whole server)": round(server * 1000 / per, 4)}}


def items(run: str, count: int, run_date: str, review_until: str, offset: int = 0) -> list[StartItem]:
    """``count`` items as the daily start builds them (ids ``<run>-<account>``)."""
    return [StartItem({"account_id": f"ACC{i:07d}", "run_date": run_date, "review_until": review_until},
                      f"{run}-ACC{i:07d}") for i in range(offset, offset + count)]


def run(redis_url: str, count: int, daily: bool = True, seed: int = 7) -> dict[str, Any]:
    """Start ``count`` instances with ``start_many`` (and, with ``daily``, the daily start); return the figures."""
    from portfolio_manager.cli import last_session
    from portfolio_manager.config import DEFAULT_DEFINITIONS_DIR
    from portfolio_manager.daily import ensure_definitions, start_daily_rebalance
    from portfolio_manager.generator import seed_book

    with Sandbox(redis_url) as sandbox:
        engine = sandbox.engine
        run_date = last_session()
        review_until = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        ensure_definitions(engine, DEFAULT_DEFINITIONS_DIR)
        engine.start_many(WORKFLOW, items("bench-start-warmup", WARM_UP, run_date.isoformat(), review_until),
                          version="production", run="bench-start-warmup")
        batch = items("bench-start", count, run_date.isoformat(), review_until)
        figures: dict[str, Any] = {"count": count, "workflow": WORKFLOW, "run_date": run_date.isoformat(),
                                   "wait_for_open": True}
        figures["start_many"] = measure(sandbox.client, lambda: len(
            engine.start_many(WORKFLOW, batch, version="production", run="bench-start")))
        figures["start_many"]["counts"] = {k: v for k, v in engine.progress("bench-start").counts.items() if v}
        if daily:
            services = sandbox.services()
            seed_book(services.book, count, seed, run_date)
            when = datetime.now(UTC) + timedelta(days=1)
            figures["daily_start"] = measure(sandbox.client, lambda: start_daily_rebalance(
                engine, services.book, run_date, run="bench-start-daily", review_until=when).total)
            figures["daily_start"]["counts"] = {
                k: v for k, v in engine.progress("bench-start-daily").counts.items() if v}
    return figures
