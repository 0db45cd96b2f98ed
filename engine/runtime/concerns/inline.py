"""Inline chaining: a worker runs the next step of an instance itself, without a broker hop.

After a delivered step, the steps after it that the worker's rule accepts (:func:`inline_rule`:
the same service's, or a service this worker also consumes) run in the same task, up to
``steps`` of them within ``seconds``. Each is still its own compare-and-set with its own
activity record; the instance remembers which message carries it (its ``carrier``), so a
redelivery of that message after its worker died takes the chain over at once
(:meth:`Inline.take_over`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from engine.config import Settings
from engine.definitions.nodes import Node, ServiceNode
from engine.instance import Instance
from engine.runtime.outcomes import StepOutcomes
from engine.runtime.pipeline import Hook
from engine.runtime.pipeline import Inline as InlineRule
from engine.service import ActionRegistry

#: At most this many steps run after a delivered one without a broker hop (0: every step is a message) ...
DEFAULT_INLINE_STEPS = Settings.inline_steps
#: ... and only while the message has run for less than this many seconds.
DEFAULT_INLINE_SECONDS = 30.0


def carrier_died(carrier: str | None, message: str, alive: Callable[[str], bool] | None = None) -> bool:
    """True when ``carrier`` ("message@host:pid") is ``message`` and its process is known to be gone.

    A carrier on this host is checked (a signal 0 to its pid); one on another host by its
    liveness mark (``alive``: "host:pid" -> whether its mark is set; see
    :mod:`engine.runtime.concerns.liveness`). Without ``alive`` it cannot be, and counts as gone:
    its redelivery then runs the step it carried, at the cost of running it twice if that
    worker was only slow (the compare-and-set keeps one transition).
    """
    if not carrier:
        return False
    carried, _, where = carrier.partition("@")
    if carried != message:
        return False
    host, _, pid = where.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return alive is None or not alive(where)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class WorkerRule:
    """Which next steps a worker of ``service`` runs itself, without a broker hop (call it on a node),
    and which of those only read (:meth:`reads_only`).

    A step whose action this worker has, of the same service always; of another service when
    this worker also consumes that service's queue (``hosted``, asked once): one fleet hosting
    several services runs an instance's whole chain in one task.
    """

    def __init__(self, service: str, registry: ActionRegistry, hosted: Callable[[], frozenset[str]]) -> None:
        self.service = service
        self.registry = registry
        self.hosted = hosted
        self._services: frozenset[str] | None = None

    def __call__(self, node: Node) -> bool:
        if not isinstance(node, ServiceNode) or f"{node.service}.{node.action}" not in self.registry:
            return False
        if node.service == self.service:
            return True
        if self._services is None:
            self._services = self.hosted()
        return node.service in self._services

    def reads_only(self, node: Node) -> bool:
        """True when ``node``'s action is registered ``reads_only`` (``engine.service.action``)."""
        if not isinstance(node, ServiceNode):
            return False
        spec = self.registry.find(f"{node.service}.{node.action}")
        return spec is not None and spec.reads_only


def inline_rule(service: str, registry: ActionRegistry, hosted: Callable[[], frozenset[str]]) -> WorkerRule:
    """The :class:`WorkerRule` of a worker of ``service`` (``hosted``: the services whose queues it consumes)."""
    return WorkerRule(service, registry, hosted)


class Inline(Hook):
    """Lets a delivery run up to ``steps`` next steps within ``seconds``; takes over a dead worker's chain."""

    def __init__(self, steps: int = DEFAULT_INLINE_STEPS, seconds: float = DEFAULT_INLINE_SECONDS) -> None:
        self.steps = steps
        self.seconds = seconds

    def chain_rule(self, runtime: StepOutcomes, inline: InlineRule | None, chained: int,
                   first_started: float) -> InlineRule | None:
        """The worker's rule while the chain has steps and time left; else None."""
        if inline is not None and chained < self.steps and runtime.clock() < first_started + self.seconds:
            return inline
        return None

    def take_over(self, runtime: StepOutcomes, instance: Instance, delivered: str, inline: InlineRule | None) -> bool:
        """A redelivered message whose worker died carrying the instance inline runs its current step."""
        return inline is not None and carrier_died(instance.carrier, delivered,
                                                   lambda process: runtime.store.alive([process])[process])
