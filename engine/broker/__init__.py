"""The broker: everything that knows Celery's or kombu's wire format and internals, behind a small interface.

The runtime pushes a step (:meth:`Enqueuer.envelope` for the store's script, or
:meth:`Enqueuer.enqueue`), takes one off a deep queue (:class:`Taker`), counts and scans queued
and unacknowledged steps (:meth:`Enqueuer.count`, :meth:`Enqueuer.pending`, :class:`Tidier`),
and a worker installs the broker's kombu patches before it connects (:func:`install_worker_patches`).
Inside: the protocol-2 envelope, kombu's key layout, the Redis lists and
unacked hash (``redis_queue``, ``lua/take.lua``), who holds each delivery (``consumers``), the
work-around for kombu's detached transport (``kombu_fix``), a delivered step's start and ack
riding round trips (``kombu_riders``). See docs/broker.md.
"""

from __future__ import annotations

from engine.broker import consumers, kombu_fix, kombu_riders
from engine.broker.celery_sender import CeleryEnqueuer
from engine.broker.interface import (
    PRIORITY_CONTINUE,
    PRIORITY_START,
    Delivery,
    Enqueuer,
    StepKey,
    StepMessage,
    TakenStep,
    Taker,
    Tidier,
)
from engine.broker.memory import MemoryEnqueuer
from engine.broker.redis_queue import RedisQueueEnqueuer
from engine.store.codec import Envelope

__all__ = [
    # messages
    "PRIORITY_CONTINUE", "PRIORITY_START", "StepKey", "StepMessage", "Envelope", "TakenStep", "Delivery",
    # what a broker implements
    "Enqueuer", "Taker", "Tidier",
    # the brokers
    "RedisQueueEnqueuer", "CeleryEnqueuer", "MemoryEnqueuer",
    # a worker's process
    "install_worker_patches",
]


def install_worker_patches() -> bool:
    """Patch kombu for a worker process, before any connection exists: survive a Redis restart
    (``kombu_fix``), record which consumer holds each delivery (``consumers``), and let a delivered
    step's start be its delivery's bookkeeping (``kombu_riders``, inert until enabled). False when
    kombu's layout is not the expected one (the patches are then left out)."""
    fixed = kombu_fix.install()
    owned = consumers.install()
    riding = owned and kombu_riders.install()
    return fixed and owned and riding
