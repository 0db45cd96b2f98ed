"""A real fleet for integration tests: celery worker processes and beat on the test Redis.

One fleet per test module, under a key prefix (engine keys) and a broker key prefix (queues)
of its own, so that tests never see each other's keys or messages; both are deleted after.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from celery import Celery

from engine.api import Engine
from engine.app import sender_app as engine_sender_app
from engine.broker import CeleryEnqueuer
from engine.instance import InstanceStatus
from engine.ops.fleet import Fleet, FleetSpec
from engine.testing import delete_prefix, enqueuer_of, make_store, step_message, store_of

if TYPE_CHECKING:
    from portfolio_manager.generator import SeedSummary
    from portfolio_manager.services import Services

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@dataclass
class LiveFleet:
    """A running fleet and an engine that talks to it."""

    engine: Engine
    fleet: Fleet
    prefix: str
    client: redis.Redis

    def wait(self, ids: list[str], timeout: float = 60.0,
             until: Callable[[InstanceStatus], bool] = lambda s: s.is_terminal) -> list:
        """Wait until every instance in ``ids`` satisfies ``until`` (terminal by default)."""
        end = time.monotonic() + timeout
        while True:
            instances = store_of(self.engine).load_many(ids)
            if len(instances) == len(ids) and all(until(i.status) for i in instances):
                return instances
            if time.monotonic() > end:
                stuck = [(i.id, i.status.value, i.node) for i in instances if not until(i.status)][:5]
                logs = "\n".join(p.read_text()[-3000:] for p in self.fleet.logdir.glob("*.log"))
                raise AssertionError(f"not done after {timeout}s: {stuck}\n--- worker logs ---\n{logs}")
            time.sleep(0.1)

    def run_with_a_duplicate(self) -> str:
        """Start a ``sleepy`` instance and publish a duplicate of its first step's message while it runs;
        wait until it succeeded and the duplicate's no-op is recorded (on a busy machine the duplicate can
        be delivered after the instance finished: a late message, not a lost one). Its id."""
        iid = self.engine.start("sleepy", {"key": "dup", "sleep": 0.5}, run="dup")
        definition = self.engine.definition("sleepy")
        enqueuer_of(self.engine).enqueue(step_message("slow", definition.nodes["slow"], iid, 1, 1))
        [inst] = self.wait([iid])
        assert inst.status is InstanceStatus.SUCCEEDED
        end = time.monotonic() + 60
        while self.engine.get(iid).noops < 1 and time.monotonic() < end:
            time.sleep(0.1)
        return iid

    def calls(self) -> dict[str, int]:
        """How often each (key, node) was called by the test services."""
        raw = self.client.hgetall(f"{self.prefix}:calls")
        return {k.decode(): int(v) for k, v in raw.items()}


def fleet_env(redis_url: str, prefix: str) -> dict[str, str]:
    """The environment of the fleet's processes."""
    return {
        "TRADEFLOW_REDIS_URL": redis_url,
        "TRADEFLOW_KEY_PREFIX": prefix,
        "TRADEFLOW_BROKER_PREFIX": f"{prefix}:q:",
        "TRADEFLOW_SERVICE_MODULES": "tests.integration.services",
        "TRADEFLOW_TIMER_INTERVAL": "0.5",
        "TRADEFLOW_SWEEP_INTERVAL": "1",
        "TRADEFLOW_RECONCILE_SECONDS": "2",
        "TRADEFLOW_EVENTS": "0",
        "TRADEFLOW_RETENTION_DAYS": str(600 / 86400),  # finished instances expire after 10 minutes
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }


def stop_fleets(fleets: Iterable[Fleet]) -> None:
    """Stop ``fleets`` side by side, each as :meth:`Fleet.stop` does (warm shutdown, then SIGKILL of
    what is left): their shutdowns overlap instead of adding up, one after another."""
    fleets = list(fleets)
    if fleets:
        with ThreadPoolExecutor(len(fleets)) as pool:
            list(pool.map(lambda fleet: fleet.stop(), fleets))


def sender_app(redis_url: str, prefix: str) -> Celery:
    """A Celery app that only sends, configured like the fleet (its queues under ``<prefix>:q:``)."""
    return engine_sender_app(redis_url, f"{prefix}:q:", "tradeflow-test")


@contextmanager
def live_fleet(redis_url: str, **env: str) -> Iterator[LiveFleet]:
    """Workers for the engine queue (threads) and the itest queue (prefork, 2 children) plus beat,
    under a key prefix of their own; ``env``: more of the fleets' environment."""
    prefix = f"tfit-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    store = make_store(client, prefix, 600)
    engine = Engine(store, CeleryEnqueuer(sender_app(redis_url, prefix)))
    specs = [FleetSpec("engine", "threads", 4), FleetSpec("itest", "prefork", 2)]
    fleet = Fleet(specs, beat=True, env={**fleet_env(redis_url, prefix), **env}, loglevel="INFO")
    try:
        with fleet:
            yield LiveFleet(engine, fleet, prefix, client)
    finally:
        delete_prefix(client, prefix)
        client.close()


@pytest.fixture(scope="module")
def live(redis_url: str) -> Iterator[LiveFleet]:
    """The module's :func:`live_fleet`."""
    with live_fleet(redis_url) as found:
        yield found


@dataclass
class PMBook:
    """A seeded book with the rebalance definitions published, under a key prefix of its own, and
    the environment of the fleets that serve it (the portfolio manager's and order_calc's actions)."""

    prefix: str
    client: redis.Redis
    env: dict[str, str]
    engine: Engine
    svc: Services
    run_date: date
    seeded: SeedSummary


def seed_pm_book(redis_url: str, name: str, accounts: int, seed: int, broken_share: float,
                 broker_latency: float) -> PMBook:
    """Seed ``accounts`` accounts under ``tfit-<name>-<random>`` and publish the definitions; the
    caller deletes the prefix (``delete_prefix``) and closes the client."""
    from portfolio_manager.cli import last_session
    from portfolio_manager.config import PMSettings
    from portfolio_manager.daily import ensure_definitions
    from portfolio_manager.generator import GeneratorConfig, seed_book
    from portfolio_manager.services import build_services

    prefix = f"tfit-{name}-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    settings = PMSettings(redis_url=redis_url, prefix=f"{prefix}:pm:")
    env = {**fleet_env(redis_url, prefix), "TRADEFLOW_SERVICE_MODULES": "portfolio_manager.actions,order_calc.actions",
           "TRADEFLOW_PM_PREFIX": settings.prefix, "TRADEFLOW_MORNING_RUN": "0",
           "TRADEFLOW_PM_BROKER_LATENCY": str(broker_latency)}
    engine = Engine(make_store(client, prefix, 600),
                    CeleryEnqueuer(sender_app(redis_url, prefix)))
    svc = build_services(settings, client=client)
    run_date = last_session()
    seeded = seed_book(svc.book, accounts, seed, run_date, GeneratorConfig(broken_share=broken_share))  # type: ignore[arg-type]
    ensure_definitions(engine, settings.definitions_dir)
    return PMBook(prefix, client, env, engine, svc, run_date, seeded)
