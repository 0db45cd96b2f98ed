"""What the runtime and the broker say to each other: step messages, taken steps, deliveries, and the
two protocols a broker implements (:class:`Enqueuer`, and :class:`Taker` for one whose queues a
worker can drain). Nothing here knows Celery's or kombu's format."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.store.codec import Envelope

#: Redis priorities: 0 is served first. Steps of instances already in flight go ahead of new
#: starts, so proposals stream out instead of all arriving when the last account started.
PRIORITY_CONTINUE = 0
PRIORITY_START = 9

#: A step message as the broker holds it: (instance id, node, seq, attempt).
StepKey = tuple[str, str, int, int]


@dataclass(frozen=True)
class StepMessage:
    """One step to run: the Celery task, its queue and its arguments."""

    task: str
    queue: str
    instance_id: str
    node: str
    seq: int
    attempt: int

    @property
    def args(self) -> list[Any]:
        """The task's positional arguments."""
        return [self.instance_id, self.node, self.seq, self.attempt]


@dataclass(frozen=True)
class TakenStep:
    """A message taken off a queue list by a worker (see :mod:`engine.runtime.concerns.draining`)."""

    #: The list it came from, and the message as the broker held it (to give it back unchanged).
    key: str
    raw: bytes | str
    #: Its Celery task name ("" when it is not a task message).
    task: str
    #: (instance id, node, seq, attempt) when it is a step message; None otherwise.
    step: StepKey | None


@dataclass(frozen=True)
class Delivery:
    """A message delivered to a consumer and not yet acknowledged (kombu's ``unacked`` hash)."""

    #: The broker's delivery tag (what an ack names).
    tag: str
    #: Its Celery task name ("" when it is not a task message) and the queue it was delivered from.
    task: str
    queue: str
    #: (instance id, node, seq, attempt) for a step message; None for any other task (sweep, tick, a batch).
    step: StepKey | None
    #: When it was delivered (wall clock; 0.0 when unknown).
    at: float
    #: True while the consumer holding it is alive, False once that consumer is gone (its liveness
    #: mark lapsed), None when no consumer was recorded for it (a worker without the broker's patches).
    held: bool | None


class Enqueuer(Protocol):
    """Something that delivers step messages to workers."""

    def enqueue(self, message: StepMessage, priority: int = PRIORITY_CONTINUE) -> None:
        """Send ``message``."""

    def envelope(self, message: StepMessage, priority: int = PRIORITY_CONTINUE) -> Envelope | None:
        """``message`` for the store to push in the same atomic update; None: send it with :meth:`enqueue`."""

    def count(self, queues: Iterable[str]) -> int | None:
        """How many messages ``queues`` hold, waiting or delivered to a live consumer and not yet
        acknowledged, step messages only (None: unknown)."""

    def pending(self, queues: Iterable[str]) -> dict[StepKey, float] | None:
        """The step messages ``queues`` hold: waiting (0.0) or delivered at that time and not yet
        acknowledged. None when the broker cannot be looked into."""


class Taker(Protocol):
    """An enqueuer whose queues a worker can take waiting messages from (a deep queue is drained)."""

    def take(self, queue: str, count: int) -> list[TakenStep]:
        """Pop up to ``count`` waiting messages of ``queue``, oldest first."""

    def give_back(self, taken: Sequence[TakenStep]) -> None:
        """Return ``taken`` messages to the head of their lists."""


class Tidier(Protocol):
    """An enqueuer whose delivered, unacknowledged messages can be read and tidied (the reconciliation)."""

    def waiting(self, queues: Iterable[str]) -> int:
        """Messages waiting in ``queues`` (every priority), any task."""

    def deliveries(self) -> list[Delivery]:
        """Every delivered, unacknowledged message, with whether its consumer is alive."""

    def restore(self, deliveries: Sequence[Delivery]) -> int:
        """Put ``deliveries`` back at the front of their queues (next to be delivered); how many went back."""

    def drop(self, deliveries: Sequence[Delivery]) -> int:
        """Forget ``deliveries`` (their steps moved on: a redelivery could only be a no-op); how many."""
