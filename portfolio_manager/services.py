"""What the portfolio manager's actions work with: the book, the proposal store and the brokerage.

Built on first use in a process from the :class:`~portfolio_manager.config.PMSettings` an edge
handed to :func:`configure` (the worker bootstrap's and the console's plugin hooks, see
:mod:`portfolio_manager.plugin`), or handed in by a test with :func:`use_services`. The actions
and the daily run reach the book through :func:`services`; the CLI builds its own with
:func:`build_services`. Nothing here reads the environment.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.config import Settings
from engine.connections import ReplicaWait, redis_client
from portfolio_manager.brokerage import (
    BlockOrder,
    BlockReceipt,
    Brokerage,
    BrokerOrder,
    BrokerReceipt,
    SimulatedBrokerage,
)
from portfolio_manager.config import PMSettings
from portfolio_manager.errors import SettingsError
from portfolio_manager.proposals import ProposalStore
from portfolio_manager.sources import BookReader, HttpBook, RedisBook


class _LatentBrokerage:
    """A brokerage that takes ``latency`` seconds per order (to make the simulation realistic)."""

    def __init__(self, inner: Brokerage, latency: float) -> None:
        self.inner = inner
        self.latency = latency

    def submit(self, order: BrokerOrder) -> BrokerReceipt:
        """Wait, then submit."""
        time.sleep(self.latency)
        return self.inner.submit(order)

    def submit_block(self, block: BlockOrder) -> BlockReceipt:
        """Wait (one ticket's latency), then submit the block."""
        time.sleep(self.latency)
        return self.inner.submit_block(block)


@dataclass
class Services:
    """What the actions work with: the book, the proposal store and the brokerage."""

    book: BookReader
    proposals: ProposalStore
    brokerage: Brokerage


def build_services(settings: PMSettings, client: Any = None) -> Services:
    """The services ``settings`` describe (on ``client`` when given, else a client on its Redis URL)."""
    if client is None:
        client = redis_client(settings.redis_url, sentinel_master=settings.redis_sentinel_master,
                              sentinel_password=settings.redis_sentinel_password)
    book: BookReader = HttpBook(settings.book_url) if settings.book_url else RedisBook(client, settings.book_prefix)

    def last_price(symbol: str) -> float | None:
        return book.get_prices([symbol], datetime.now(UTC).date()).get(symbol)

    brokerage: Brokerage = SimulatedBrokerage(client, settings.broker_prefix, last_price=last_price,
                                              retention_seconds=settings.retention_seconds,
                                              accepts_per_second=settings.broker_accepts)
    if settings.broker_latency:
        brokerage = _LatentBrokerage(brokerage, settings.broker_latency)
    replicate = ReplicaWait(settings.redis_wait_replicas, settings.redis_wait_ms) if settings.redis_wait_replicas \
        else None
    return Services(book, ProposalStore(client, settings.proposals_prefix, replicate, settings.retention_seconds),
                    brokerage)


_lock = threading.Lock()
_current: dict[str, Any] = {}
_configured: dict[str, Any] = {}

_NOT_CONFIGURED = ("this process has no portfolio manager settings: a worker gets them from its bootstrap "
                   "(`celery -A engine.worker`, which calls the plugin's `worker` hook), the console from its "
                   "plugin hook; a test hands its services to use_services()")


def configure(settings: PMSettings, engine_settings: Settings | None = None) -> None:
    """The settings this process's services (and the daily run's engine) are built from, read at the edge."""
    with _lock:
        _configured.update(settings=settings, engine_settings=engine_settings)
        if not _current.get("pinned"):
            _current.clear()


def configured() -> tuple[PMSettings, Settings]:
    """The settings handed to :func:`configure` (the engine's too); SettingsError says where they come from."""
    settings, engine_settings = _configured.get("settings"), _configured.get("engine_settings")
    if settings is None or engine_settings is None:
        raise SettingsError(_NOT_CONFIGURED)
    return settings, engine_settings


def engine_settings() -> Settings:
    """The engine's settings handed to :func:`configure` (a worker's); the defaults in a process given none (a test)."""
    return _configured.get("engine_settings") or Settings()


def services() -> Services:
    """This process's services: the ones handed to :func:`use_services`, else built from the configured settings."""
    found = _current.get("services")
    if found is not None and (_current.get("pid") == os.getpid() or _current.get("pinned")):
        return found
    with _lock:
        found = _current.get("services")
        if found is None or (_current.get("pid") != os.getpid() and not _current.get("pinned")):
            settings = _configured.get("settings")
            if settings is None:
                raise SettingsError(_NOT_CONFIGURED)
            found = build_services(settings)
            _current.update(services=found, pid=os.getpid(), pinned=False)
        return found


def use_services(value: Services | None) -> None:
    """Use ``value`` from now on (tests); None goes back to building them from the configured settings."""
    with _lock:
        _current.clear()
        if value is not None:
            _current.update(services=value, pid=os.getpid(), pinned=True)


@contextmanager
def services_in_use(value: Services) -> Iterator[Services]:
    """``with services_in_use(s):`` -- use ``s`` inside the block only."""
    use_services(value)
    try:
        yield value
    finally:
        use_services(None)
