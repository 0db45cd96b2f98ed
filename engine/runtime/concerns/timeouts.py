"""Timeouts and the sweeper: a started step that makes no progress is re-sent, a lost message found.

- **deadlines** (:meth:`Timeouts.on_sweep`): a step started by a worker has until its node's
  ``timeout_seconds`` (plus a grace) to change the instance; past it, the sweeper sends it again
  as its next attempt -- at least ``MIN_TIMEOUT_ATTEMPTS`` tries in all, whatever its retry
  policy -- then fails it.
- **lost messages** (:meth:`Timeouts.on_reconcile`): a step waiting in a queue has no deadline
  (a backlog is not a loss); a message that vanished before a worker started it is looked for
  in the broker's queues and unacknowledged messages, and re-sent when two looks a period apart
  miss it.
"""

from __future__ import annotations

import logging
import time

from engine.definitions.nodes import Definition, StepNode
from engine.instance import InstanceStatus, Outcome
from engine.runtime.deliveries import count_messages, settle
from engine.runtime.outcomes import StepOutcomes, step_message
from engine.runtime.pipeline import Hook

log = logging.getLogger(__name__)

#: Queued steps older than this are looked for in the broker, at most once per this many seconds.
DEFAULT_RECONCILE_SECONDS = 60.0
#: Queued steps older than this many reconcile periods are looked for one by one even when the
#: message counts agree; a message delivered that long ago and still not started counts as lost
#: (its worker died holding it).
FULL_CHECK_PERIODS = 10
#: At most this many queued steps are checked per reconciliation (the oldest).
RECONCILE_BATCH = 2000


def step_queues(definition: Definition) -> frozenset[str]:
    """The broker queues the steps of ``definition`` are sent to."""
    return frozenset(step_message(name, node, "", 0, 0).queue for name, node in definition.nodes.items()
                     if isinstance(node, StepNode))


class Timeouts(Hook):
    """The sweeper's two looks: started steps past their deadline, queued steps whose message is lost."""

    def __init__(self, limit: int = 500, lease_seconds: float = 60.0) -> None:
        #: Overdue steps claimed per sweep, and how long a claim keeps other sweepers off them.
        self.limit = limit
        self.lease_seconds = lease_seconds

    def on_sweep(self, runtime: StepOutcomes) -> int:
        """Re-send started steps that made no progress within their node's timeout; fail them when tries
        run out. A step only has a deadline once a worker started it (see :meth:`on_reconcile` for
        messages lost before that)."""
        limit, lease_seconds = self.limit, self.lease_seconds
        now = runtime.clock()
        handled = 0
        for instance_id, _deadline in runtime.store.claim_overdue(now, limit, lease_seconds):
            instance = runtime.store.load(instance_id)
            if instance is None or instance.status is not InstanceStatus.RUNNING:
                runtime.store.release(instance_id, "deadlines")
                continue
            definition = runtime.store.definition(instance.workflow, instance.version)
            node = definition.nodes[instance.node]
            if not isinstance(node, StepNode):
                runtime.store.release(instance_id, "deadlines")
                continue
            reason = f"no progress within {node.timeout_seconds:g}s (lost message, dead worker or hung step)"
            runtime.resend_lost(instance, definition, runtime.clock(), "timeout", reason, "Timeout")
            handled += 1
        return handled

    def on_reconcile(self, runtime: StepOutcomes, every: float, limit: int) -> int:
        """Re-send queued steps whose message is lost; returns how many. At most once per ``every``.

        A step that waits in a queue has no deadline (a backlog is not a loss), so a message that
        disappears before a worker starts it (the broker dropped it, Redis came back from an older
        AOF, a worker died holding it) is found here instead: a step queued for more than
        ``every`` seconds whose message is in neither its service's queue lists nor the broker's
        unacknowledged messages -- or was delivered more than ``FULL_CHECK_PERIODS`` x ``every``
        ago and still has not started -- is a suspect; one found missing by two reconciliations
        in a row, still queued at the same step, is re-sent (next attempt, recorded). Cheap when
        nothing is wrong, however deep the queues: the messages are only read one by one when
        their count is below the number of queued steps, or -- at most once per
        ``FULL_CHECK_PERIODS`` x ``every`` -- when a queued step is older than that; only
        messages that can be a queued step's count (:mod:`engine.runtime.deliveries`).
        ``every=0``: no rate limit (tests).
        """
        if every > 0 and not runtime.store.lease_reconcile(every):
            return 0
        held = settle(runtime.enqueuer, runtime.store)  # dead consumers' deliveries given back or dropped
        # Ages are measured on the wall clock, as the broker and the store stamp messages.
        now = time.time()
        candidates = runtime.store.queued_since(now - every, limit)
        if not candidates:
            runtime.store.swap_suspects({})
            return 0
        heads = runtime.store.step_heads([iid for iid, _sent in candidates])
        steps: dict[str, tuple[tuple[str, str, int, int], float]] = {}
        queues: set[str] = set()
        seen: set[tuple[str, int]] = set()
        for iid, sent in candidates:
            head = heads.get(iid)
            if head is None:
                runtime.store.release(iid, "queued")
                continue
            definition = runtime.store.definition(head.workflow, head.version)
            node = definition.nodes.get(head.node)
            if head.status is not InstanceStatus.RUNNING or not isinstance(node, StepNode):
                continue
            if (head.workflow, head.version) not in seen:
                seen.add((head.workflow, head.version))
                queues.update(step_queues(definition))
            steps[iid] = ((iid, head.node, head.seq, head.attempt), sent)
        held_limit = every * FULL_CHECK_PERIODS
        counted = count_messages(runtime.enqueuer, held, queues)
        if counted is None:
            return 0  # a broker that cannot be looked into
        if counted >= runtime.store.queued_count():
            # Every queued step can have its message: nothing to look for, unless one was sent so
            # long ago that a message delivered and never started (its worker died holding it) is
            # possible. That look reads every message of the queues -- O(backlog): 100 MB behind a
            # 100,000-account morning -- so it is made once per ``held_limit`` (two looks in a
            # row, that far apart, confirm a loss), not at every reconciliation.
            if now - candidates[0][1] < held_limit:
                return 0
            if every > 0 and not runtime.store.lease_full_check(held_limit - every / 2):
                return 0
        pending = runtime.enqueuer.pending(queues)
        if pending is None:
            return 0
        missing = {}
        for iid, (key, _sent) in steps.items():
            delivered = pending.get(key)
            if delivered is None or (delivered and now - delivered > held_limit):
                missing[iid] = f"{key[2]}:{key[3]}"
        # A step a worker started while the lists were read is no longer queued: not a suspect.
        still = runtime.store.queued_at_many(list(missing))
        missing = {iid: mark for iid, mark in missing.items() if still.get(iid) == steps[iid][1]}
        previous = runtime.store.swap_suspects(missing)
        resent = 0
        for iid, mark in missing.items():
            key, sent = steps[iid]
            if previous.get(iid) != mark or runtime.store.queued_at(iid) != sent:
                continue
            instance = runtime.store.load(iid)
            if instance is None or (instance.node, instance.seq, instance.attempt) != key[1:]:
                continue
            definition = runtime.store.definition(instance.workflow, instance.version)
            where = "found in no queue nor among the delivered messages" if pending.get(key) is None else \
                f"delivered {now - pending[key]:.0f}s ago and never started (its worker died holding it)"
            log.warning("step %s/%s seq %s attempt %s queued %.0fs ago: message %s; re-sending",
                        iid, instance.node, instance.seq, instance.attempt, now - sent, where)
            resent += runtime.resend(instance, definition, instance.attempt + 1, activity=runtime.activity(
                instance.node, instance.seq, instance.attempt, runtime.clock(), Outcome.RETRY,
                error=f"message lost: queued {now - sent:.0f}s ago, {where}", retry_in=0))
        return resent
