"""Step messages: which task and queue run a node's step. The message types and the brokers that
carry them are :mod:`engine.broker`'s (re-exported here for the runtime's modules).

A step message names (instance, node, seq, attempt) and nothing else: the worker reads the
instance and builds the input itself, so a message stays small and a redelivery is harmless.
"""

from __future__ import annotations

from engine.broker import (
    PRIORITY_CONTINUE,
    PRIORITY_START,
    Enqueuer,
    Envelope,
    StepKey,
    StepMessage,
    TakenStep,
    Taker,
)
from engine.definitions.model import HttpNode, StepNode

__all__ = ["ENGINE_QUEUE", "HTTP_TASK", "PRIORITY_CONTINUE", "PRIORITY_START", "SWEEP_TASK", "TICK_TASK",
           "Enqueuer", "Envelope", "StepKey", "StepMessage", "TakenStep", "Taker", "step_message"]

ENGINE_QUEUE = "engine"
HTTP_TASK = "engine.http"
TICK_TASK = "engine.tick"
SWEEP_TASK = "engine.sweep"


def step_message(node_name: str, node: StepNode, instance_id: str, seq: int, attempt: int) -> StepMessage:
    """The message that runs ``node`` for an instance at ``seq``."""
    if isinstance(node, HttpNode):
        return StepMessage(HTTP_TASK, ENGINE_QUEUE, instance_id, node_name, seq, attempt)
    return StepMessage(f"{node.service}.{node.action}", node.service, instance_id, node_name, seq, attempt)
