"""Step messages and the enqueuers that send them.

A step message names (instance, node, seq, attempt) and nothing else: the worker reads the
instance and builds the input itself, so a message stays small and a redelivery is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.definitions.model import HttpNode, StepNode
from engine.store.changes import Envelope

__all__ = ["ENGINE_QUEUE", "Envelope", "Enqueuer", "StepMessage", "TakenStep", "Taker", "step_message"]

ENGINE_QUEUE = "engine"
HTTP_TASK = "engine.http"
TICK_TASK = "engine.tick"
SWEEP_TASK = "engine.sweep"

#: Redis priorities: 0 is served first. Steps of instances already in flight go ahead of new
#: starts, so proposals stream out instead of all arriving when the last account started.
PRIORITY_CONTINUE = 0
PRIORITY_START = 9


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


def step_message(node_name: str, node: StepNode, instance_id: str, seq: int, attempt: int) -> StepMessage:
    """The message that runs ``node`` for an instance at ``seq``."""
    if isinstance(node, HttpNode):
        return StepMessage(HTTP_TASK, ENGINE_QUEUE, instance_id, node_name, seq, attempt)
    return StepMessage(f"{node.service}.{node.action}", node.service, instance_id, node_name, seq, attempt)


#: A step message as the broker holds it: (instance id, node, seq, attempt).
StepKey = tuple[str, str, int, int]


@dataclass(frozen=True)
class TakenStep:
    """A message taken off a queue list by a worker (see :mod:`engine.runtime.drain`)."""

    #: The list it came from, and the message as the broker held it (to give it back unchanged).
    key: str
    raw: bytes | str
    #: Its Celery task name ("" when it is not a task message).
    task: str
    #: (instance id, node, seq, attempt) when it is a step message; None otherwise.
    step: StepKey | None


class Enqueuer(Protocol):
    """Something that delivers step messages to workers."""

    def enqueue(self, message: StepMessage, priority: int = PRIORITY_CONTINUE) -> None:
        """Send ``message``."""

    def envelope(self, message: StepMessage, priority: int = PRIORITY_CONTINUE) -> Envelope | None:
        """``message`` for the store to push in the same atomic update; None: send it with :meth:`enqueue`."""

    def count(self, queues: Iterable[str]) -> int | None:
        """How many messages ``queues`` hold, waiting or delivered and not yet acknowledged (None: unknown)."""

    def pending(self, queues: Iterable[str]) -> dict[StepKey, float] | None:
        """The step messages ``queues`` hold: waiting (0.0) or delivered at that time and not yet
        acknowledged. None when the broker cannot be looked into."""


class Taker(Protocol):
    """An enqueuer whose queues a worker can take waiting messages from (a deep queue is drained)."""

    def take(self, queue: str, count: int) -> list[TakenStep]:
        """Pop up to ``count`` waiting messages of ``queue``, oldest first."""

    def give_back(self, taken: Sequence[TakenStep]) -> None:
        """Return ``taken`` messages to the head of their lists."""


class MemoryEnqueuer:
    """Keeps messages in a list: tests drive the engine one step at a time."""

    def __init__(self) -> None:
        self.messages: list[tuple[StepMessage, int]] = []

    def enqueue(self, message: StepMessage, priority: int = PRIORITY_CONTINUE) -> None:
        """Append ``message``."""
        self.messages.append((message, priority))

    def envelope(self, message: StepMessage, priority: int = PRIORITY_CONTINUE) -> None:
        """None: messages go through :meth:`enqueue`, into the list."""
        return None

    def count(self, queues: Iterable[str]) -> int:
        """Messages of ``queues`` in the list."""
        wanted = set(queues)
        return sum(1 for m, _ in self.messages if m.queue in wanted)

    def pending(self, queues: Iterable[str]) -> dict[StepKey, float]:
        """Every message of ``queues`` in the list, as waiting."""
        wanted = set(queues)
        return {(m.instance_id, m.node, m.seq, m.attempt): 0.0 for m, _ in self.messages if m.queue in wanted}

    def pop(self) -> StepMessage:
        """The next message to run: highest priority (lowest number) first, FIFO within it."""
        best = min(range(len(self.messages)), key=lambda i: (self.messages[i][1], i))
        return self.messages.pop(best)[0]


class CeleryEnqueuer:
    """Sends step messages as Celery tasks (json) to the queue of their service."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def enqueue(self, message: StepMessage, priority: int = PRIORITY_CONTINUE) -> None:
        """Publish ``message`` on its service's queue."""
        self.app.send_task(message.task, args=message.args, queue=message.queue, priority=priority,
                           ignore_result=True)

    def envelope(self, message: StepMessage, priority: int = PRIORITY_CONTINUE) -> None:
        """None: a broker other than the state's Redis is reached through Celery, after the update."""
        return None

    def count(self, queues: Iterable[str]) -> None:
        """None: another broker's queues are not looked into."""
        return None

    def pending(self, queues: Iterable[str]) -> None:
        """None: another broker's queues are not looked into (its own redelivery applies)."""
        return None
