"""Fault points in the order submission step, armed per instance from Redis (test code only).

Loaded by the test's portfolio_manager workers (``TRADEFLOW_SERVICE_MODULES``), it pins the
actions' services to the ones of the environment with the brokerage and the proposal store
wrapped, so that the ``submit_orders`` step of an armed instance dies or times out at one of:

- ``before_call:<k>`` -- before order ``k`` is sent to the brokerage;
- ``after_accept:<k>`` -- after the brokerage accepted order ``k``, before anything is recorded;
- ``after_mark`` -- after every order was accepted and the proposal marked submitted, before
  the engine applies the step's transition;
- ``timeout_unknown:<k>`` -- the brokerage accepts order ``k`` but the caller gets a
  ``BrokerageTimeout`` (outcome unknown; the node's retry policy sends the step again).

Arm: ``HSET <prefix>:submit-faults <instance id> <point>``. A fault fires once (the field is
deleted by whoever fires it). A kill is ``SIGKILL`` of the worker's own process in workers,
and an injected ``kill`` callable (raising :class:`Killed`) under the in-process Driver.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

from portfolio_manager.brokerage import Brokerage, BrokerOrder, BrokerReceipt
from portfolio_manager.errors import BrokerageTimeout
from portfolio_manager.proposals import ProposalStore

POINTS = ("before_call", "after_accept", "after_mark", "timeout_unknown")


class Killed(BaseException):
    """The process died here (raised under the Driver; a BaseException, so the runtime does not catch it)."""


def faults_key(prefix: str) -> str:
    """Hash of instance id -> armed fault point."""
    return f"{prefix}:submit-faults"


def sigkill_self() -> None:
    """Die like a worker killed by the OOM killer or ``kill -9``."""
    os.kill(os.getpid(), signal.SIGKILL)


class FaultPoints:
    """Fires the fault armed for an instance at the matching point, once."""

    def __init__(self, client: Any, key: str, kill: Callable[[], None]) -> None:
        self.client = client
        self.key = key
        self.kill = kill

    def fire(self, instance_id: str, point: str) -> bool:
        """True if ``point`` is armed for ``instance_id`` (and it is now disarmed)."""
        armed = self.client.hget(self.key, instance_id)
        if armed is None or armed.decode() != point:
            return False
        return bool(self.client.hdel(self.key, instance_id))


class FaultyBrokerage:
    """A brokerage that dies or times out at the armed points around the real one."""

    def __init__(self, inner: Brokerage, points: FaultPoints) -> None:
        self.inner = inner
        self.points = points

    def submit(self, order: BrokerOrder) -> BrokerReceipt:
        """Submit, unless a fault is armed for this order's instance and index."""
        instance_id, _node, _seq, index = order.idempotency_key.rsplit(":", 3)
        if self.points.fire(instance_id, f"before_call:{index}"):
            self.points.kill()
        receipt = self.inner.submit(order)
        if self.points.fire(instance_id, f"after_accept:{index}"):
            self.points.kill()
        if self.points.fire(instance_id, f"timeout_unknown:{index}"):
            raise BrokerageTimeout(f"order {order.idempotency_key}: no answer (injected; the brokerage took it)")
        return receipt

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FaultyProposals(ProposalStore):
    """The proposal store, dying right after a submission was marked (``after_mark``)."""

    def __init__(self, inner: ProposalStore, points: FaultPoints) -> None:
        super().__init__(inner.client, inner.prefix)
        self.points = points

    def mark_submitted(self, run: str, account_id: str, receipts: Sequence[dict[str, Any]], submission: str) -> None:
        """Mark, then die if armed."""
        super().mark_submitted(run, account_id, receipts, submission)
        if self.points.fire(submission, "after_mark"):
            self.points.kill()


def wrap(services: Any, prefix: str, kill: Callable[[], None]) -> Any:
    """``services`` with the brokerage and proposal store wrapped by the fault points of ``prefix``."""
    from portfolio_manager.actions import Services

    points = FaultPoints(services.proposals.client, faults_key(prefix), kill)
    return Services(services.book, FaultyProposals(services.proposals, points),
                    FaultyBrokerage(services.brokerage, points))


def _install_in_worker() -> None:
    from portfolio_manager.actions import build_services, use_services
    from portfolio_manager.config import PMSettings

    use_services(wrap(build_services(PMSettings.from_env()), os.environ["TRADEFLOW_KEY_PREFIX"], sigkill_self))


if os.environ.get("TRADEFLOW_SUBMIT_FAULTS") == "1":  # only in the workers this test starts
    _install_in_worker()
