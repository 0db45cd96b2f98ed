"""The reconciliation's view of delivered messages: which ones can still be a queued step's message.

kombu's ``unacked`` hash holds every message delivered and not yet acknowledged: a live
worker's prefetched and running steps, the housekeeping task running right now (sweep,
tick), and -- until kombu's visibility timeout, an hour by default -- the deliveries of nodes
that were SIGKILLed. Counted as they are, they hide a lost message (the count covers the
queued steps, so the messages are never read). :func:`settle` sorts them each reconciliation:

- a delivery held by a consumer that is gone (its liveness mark lapsed, see
  :mod:`engine.broker.consumers`) goes back to the front of its queue, or is dropped when its
  step provably moved on (the instance is past that seq or attempt, finished, or gone), as a
  redelivery could only be a recorded no-op;
- what it returns -- and what :func:`count_messages` adds to the waiting messages -- are the
  step deliveries of live consumers whose step is still queued at exactly that
  (node, seq, attempt). Housekeeping tasks, started steps and steps that moved on do not count.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from engine.broker import Delivery, Enqueuer, StepKey
from engine.instance import TERMINAL_STATUSES
from engine.store.queued import StepHead
from engine.store.redis_store import RedisStore

log = logging.getLogger(__name__)


def moved_on(step: StepKey, head: StepHead | None) -> bool:
    """True when a message for ``step`` can only be a no-op: its instance is gone or finished, or past that
    seq, or at that seq with a later attempt."""
    _iid, _node, seq, attempt = step
    return (head is None or head.status in TERMINAL_STATUSES or head.seq > seq
            or (head.seq == seq and head.attempt > attempt))


def settle(enqueuer: Enqueuer | Any, store: RedisStore) -> list[Delivery] | None:
    """Give dead consumers' deliveries back (or drop those whose step moved on); the live deliveries of
    steps still queued at their (node, seq, attempt). None when the broker cannot be looked into."""
    if not hasattr(enqueuer, "deliveries"):
        return None
    deliveries = enqueuer.deliveries()
    ids = sorted({d.step[0] for d in deliveries if d.step is not None})
    heads = store.step_heads(ids) if ids else {}
    queued = store.queued_at_many(ids)
    gone = [d for d in deliveries if d.held is False]
    drop = [d for d in gone if d.step is not None and moved_on(d.step, heads.get(d.step[0]))]
    restore = [d for d in gone if d not in drop]
    if drop or restore:
        dropped, restored = enqueuer.drop(drop), enqueuer.restore(restore)
        log.warning("deliveries of consumers that are gone: %d given back to their queues, %d dropped "
                    "(their steps had moved on)", restored, dropped)
    current = []
    for delivery in deliveries:
        if delivery.held is False or delivery.step is None or delivery.step[0] not in queued:
            continue
        head = heads.get(delivery.step[0])
        if head is not None and (head.node, head.seq, head.attempt) == delivery.step[1:]:
            current.append(delivery)
    return current


def count_messages(enqueuer: Enqueuer, held: list[Delivery] | None, queues: Iterable[str]) -> int | None:
    """Messages that can be those of queued steps of ``queues``: the waiting ones plus ``held`` (from
    :func:`settle`); the broker's own count when it cannot be looked into that far."""
    wanted = set(queues)
    if held is None or not hasattr(enqueuer, "waiting"):
        return enqueuer.count(wanted)
    return int(enqueuer.waiting(wanted)) + sum(1 for d in held if d.queue in wanted)
