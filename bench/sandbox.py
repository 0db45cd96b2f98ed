"""A tradeflow deployment of its own on a shared Redis, for one benchmark, deleted after.

Everything lives under one random prefix ``<prefix>``: the engine's keys (``<prefix>:…``),
the portfolio manager's (``<prefix>:pm:…``) and the broker's queues (``<prefix>:q:…``), so a
benchmark never sees another's keys or messages and ``delete_prefix`` removes exactly its own.
With ``pm_redis_url`` the portfolio manager's keys are on that Redis instead (the workers get
``TRADEFLOW_PM_REDIS_URL``), as a deployment that gives the book a Redis of its own.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from engine.api import Engine
from engine.app import enqueuer_for, sender_app
from engine.config import Settings
from engine.connections import redis_client
from engine.ops.inspect import Inspector
from engine.testing import delete_prefix, make_store

if TYPE_CHECKING:
    from celery import Celery

    from portfolio_manager.actions import Services

ROOT = Path(__file__).resolve().parents[1]
#: Finished instances expire after a day: a benchmark that dies before its clean-up leaves
#: nothing behind for long on the shared Redis. (The TTL's bookkeeping costs the same whatever its value.)
RETENTION_DAYS = 1.0


@dataclass
class Sandbox:
    """An engine, the portfolio manager's services and the workers' environment under one prefix."""

    redis_url: str
    prefix: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    #: The Redis of the book, the proposals and the brokerage; None: the engine's.
    pm_redis_url: str | None = None

    def __post_init__(self) -> None:
        self.client = redis_client(self.redis_url)  # as the workers' clients are made (its command packer)
        #: The client of the portfolio manager's Redis (the engine's client when they share one).
        self.pm_client = redis_client(self.pm_redis_url) if self.pm_redis_url else self.client
        #: What the benchmarks read of the stored state (key names, run ids, decoding): read-only.
        self.inspector = Inspector(self.client, self.prefix)
        self.store = make_store(self.client, self.prefix, int(RETENTION_DAYS * 86400))
        self._app = sender_app(self.redis_url, self.broker_prefix, "tradeflow-bench",
                               Settings(redis_url=self.redis_url))
        # The broker is the state's Redis, as `tradeflow workers` and `pm run` have it by default: the
        # store's scripts push the step messages (what build_engine's enqueuer_for picks), not send_task.
        self.engine = Engine(self.store, enqueuer_for(self._app, client=self.client))

    def engine_app(self) -> Celery:
        """The Celery app this sandbox's engine sends with (its control API reaches the sandbox's workers)."""
        return self._app

    @property
    def pm_url(self) -> str:
        """The Redis of the book, the proposals and the brokerage (the engine's when they share one)."""
        return self.pm_redis_url or self.redis_url

    @property
    def pm_prefix(self) -> str:
        """Prefix of the book, the proposals and the simulated brokerage."""
        return f"{self.prefix}:pm:"

    @property
    def broker_prefix(self) -> str:
        """Prefix of the Celery queues."""
        return f"{self.prefix}:q:"

    def env(self) -> dict[str, str]:
        """The environment of the worker processes (explicit, so nothing leaks from an earlier benchmark)."""
        return {
            "TRADEFLOW_REDIS_URL": self.redis_url,
            "TRADEFLOW_KEY_PREFIX": self.prefix,
            "TRADEFLOW_BROKER_PREFIX": self.broker_prefix,
            "TRADEFLOW_PM_PREFIX": self.pm_prefix,
            "TRADEFLOW_SERVICE_MODULES": "portfolio_manager.actions,order_calc.actions",
            "TRADEFLOW_EVENTS": "0",
            "TRADEFLOW_MORNING_RUN": "0",
            "TRADEFLOW_RETENTION_DAYS": str(RETENTION_DAYS),
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        } | ({"TRADEFLOW_PM_REDIS_URL": self.pm_redis_url} if self.pm_redis_url else {})

    def services(self) -> Services:
        """The book, proposals and brokerage of this sandbox (in this process)."""
        from portfolio_manager.actions import build_services
        from portfolio_manager.config import PMSettings

        return build_services(PMSettings(redis_url=self.pm_url, prefix=self.pm_prefix), self.pm_client)

    def close(self) -> None:
        """Delete every key of the sandbox (on both Redis servers when the book has its own)."""
        delete_prefix(self.client, self.prefix)
        self.client.close()
        if self.pm_client is not self.client:
            delete_prefix(self.pm_client, self.prefix)
            self.pm_client.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
