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

The gate (:class:`Gate`) holds every brokerage call (an order or a block) after the first
``n`` while ``<prefix>:submit-gate`` holds ``n``: a test that kills a worker "in the middle of
the submission" waits until a call is held, so the kill lands there however slow the machine
is; deleting the key lets the calls through again.
"""

from __future__ import annotations

import os
import signal
import time
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


def gate_key(prefix: str) -> str:
    """The gate's key: how many brokerage calls pass while it exists (``<key>:calls`` counts them,
    ``<key>:held`` counts the calls held)."""
    return f"{prefix}:submit-gate"


class Gate:
    """Holds brokerage calls after the first ``n`` while the gate key holds ``n``."""

    def __init__(self, client: Any, key: str, poll: float = 0.05) -> None:
        self.client = client
        self.key = key
        self.poll = poll

    def pass_through(self) -> None:
        """Return at once when the gate is open or this call is among the first ``n``; else wait until it opens."""
        limit = self.client.get(self.key)
        if limit is None or self.client.incr(f"{self.key}:calls") <= int(limit):
            return
        self.client.incr(f"{self.key}:held")
        while self.client.exists(self.key):
            time.sleep(self.poll)

    def close_after(self, calls: int) -> None:
        """Let ``calls`` brokerage calls through, hold the ones after them (test side)."""
        self.client.delete(f"{self.key}:calls", f"{self.key}:held")
        self.client.set(self.key, calls)

    def held(self) -> int:
        """How many calls the gate has held so far (test side)."""
        return int(self.client.get(f"{self.key}:held") or 0)

    def open(self) -> None:
        """Let every call through (test side)."""
        self.client.delete(self.key)


class FaultyBrokerage:
    """A brokerage that dies or times out at the armed points around the real one, behind the gate."""

    def __init__(self, inner: Brokerage, points: FaultPoints, gate: Gate | None = None) -> None:
        self.inner = inner
        self.points = points
        self.gate = gate

    def submit_block(self, block: Any) -> Any:
        """Submit a block order once the gate lets it through."""
        if self.gate is not None:
            self.gate.pass_through()
        return self.inner.submit_block(block)

    def submit(self, order: BrokerOrder) -> BrokerReceipt:
        """Submit, unless a fault is armed for this order's instance and index (once the gate lets it through)."""
        if self.gate is not None:
            self.gate.pass_through()
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
                    FaultyBrokerage(services.brokerage, points, Gate(services.proposals.client, gate_key(prefix))))


def _install_in_worker() -> None:
    from portfolio_manager.actions import build_services, use_services
    from portfolio_manager.config import PMSettings

    use_services(wrap(build_services(PMSettings.from_env()), os.environ["TRADEFLOW_KEY_PREFIX"], sigkill_self))


if os.environ.get("TRADEFLOW_SUBMIT_FAULTS") == "1":  # only in the workers this test starts
    _install_in_worker()
