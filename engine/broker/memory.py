"""A broker in a list: tests drive the engine one message at a time."""

from __future__ import annotations

from collections.abc import Iterable

from engine.broker.interface import PRIORITY_CONTINUE, StepKey, StepMessage


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
