"""The dispatcher: given a node and a scope, decide where an instance goes next.

``choice`` nodes are followed inline (no broker hop) until a node that needs work is
reached: a ``service``/``http`` step to enqueue, a ``wait`` to park, an ``await`` to park
until a signal (or its timeout), a ``gather`` to contribute to a batch (or, when the group's
batch has closed and the node has ``late``, follow ``late`` like a choice), or a ``terminal``
to finish. A shadow instance (``instance.shadow`` in the scope) ends, succeeded, on reaching a
node marked ``"shadow": "stop"``, and never joins a gather node's batch. The caller applies the
decision in one atomic update (see :mod:`engine.runtime.runner`).
Pure: no Redis, no Celery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from engine.definitions.model import (
    AwaitNode,
    ChoiceNode,
    Definition,
    GatherNode,
    StepNode,
    TerminalNode,
    WaitNode,
)
from engine.errors import ExpressionError, StepFailed
from engine.expressions.cel import Scope, compile_expression, compile_template
from engine.model import InstanceStatus

MAX_INLINE_HOPS = 64
#: The longest batch name a gather's ``group`` may give (with its service and action).
MAX_GROUP_LENGTH = 200

#: Says whether the batch of that name has closed (an arrival now would be late).
ClosedBatch = Callable[[str], bool]


class NextKind(StrEnum):
    """What the instance does at the node it lands on."""

    STEP = "step"
    WAIT = "wait"
    AWAIT = "await"
    GATHER = "gather"
    FINISH = "finish"


@dataclass(frozen=True)
class Arrival:
    """What an instance brings to a gather node: the batch name, its close time and its contribution."""

    name: str
    group: str
    close_at: float
    contribution: Any
    close_early: bool
    service: str
    action: str


@dataclass(frozen=True)
class Next:
    """The first node after a transition that is not applied inline."""

    kind: NextKind
    node: str
    via: tuple[str, ...] = ()
    wake_at: float | None = None
    status: InstanceStatus | None = None
    result: Any = None
    arrival: Arrival | None = None


def batch_name(node: GatherNode, group: str) -> str:
    """The name of the batch a gather node's ``group`` value designates: ``<service>.<action>:<group>``."""
    return f"{node.service}.{node.action}:{group}"


def target_of(definition: Definition, node_name: str, transition: str) -> str:
    """The node that ``transition`` of ``node_name`` leads to; StepFailed if it has none."""
    node = definition.nodes[node_name]
    transitions = getattr(node, "transitions", {})
    if transition not in transitions:
        expected = ", ".join(sorted(transitions)) or "none"
        raise StepFailed(f"unknown transition {transition!r} from node {node_name!r} (expected one of: {expected})")
    return transitions[transition]


def resolve(definition: Definition, node_name: str, scope: Scope, closed: ClosedBatch | None = None) -> Next:
    """Follow ``choice`` nodes from ``node_name`` and say what the instance does next.

    ``closed`` tells whether a batch has closed: a gather node whose batch has, and which has
    ``late``, is followed to ``late`` (without it, every arrival contributes).
    """
    via: list[str] = []
    shadow = bool(scope.instance.get("shadow"))
    for _ in range(MAX_INLINE_HOPS):
        node = definition.nodes[node_name]
        if shadow and node.shadow == "stop":  # a shadow ends here, before the node runs
            return Next(NextKind.FINISH, node_name, tuple(via), status=InstanceStatus.SUCCEEDED,
                        result=shadow_result(node_name))
        if shadow and isinstance(node, GatherNode):
            raise StepFailed(f"a shadow never joins a batch: gather node {node_name!r} has no \"shadow\": \"stop\" "
                             "before it (add one to it or to a node before it)")
        if isinstance(node, ChoiceNode):
            via.append(node_name)
            node_name = _choose(node_name, node, scope)
            continue
        if isinstance(node, StepNode):
            return Next(NextKind.STEP, node_name, tuple(via))
        if isinstance(node, WaitNode):
            return Next(NextKind.WAIT, node_name, tuple(via), wake_at=wake_time(node_name, node, scope))
        if isinstance(node, AwaitNode):
            return Next(NextKind.AWAIT, node_name, tuple(via), wake_at=await_timeout(node_name, node, scope))
        if isinstance(node, GatherNode):
            arrival = gather_arrival(node_name, node, scope)
            if node.late is not None and closed is not None and closed(arrival.name):
                via.append(node_name)
                node_name = node.late
                continue
            return Next(NextKind.GATHER, node_name, tuple(via), wake_at=arrival.close_at, arrival=arrival)
        if isinstance(node, TerminalNode):
            result = None
            if node.result is not None:
                result = _evaluate(node_name, "result", lambda n=node: compile_template(n.result).evaluate(scope))
            return Next(NextKind.FINISH, node_name, tuple(via), status=InstanceStatus(node.status.value),
                        result=result)
        raise StepFailed(f"node {node_name!r} has an unknown type")  # pragma: no cover - validated
    raise StepFailed(f"more than {MAX_INLINE_HOPS} choice nodes in a row from {via[0]!r}: a loop without a step")


def shadow_result(node_name: str) -> dict[str, Any]:
    """The result of a shadow that ended at its stop ``node_name`` (its context stays on the instance)."""
    return {"shadow": "stopped", "node": node_name}


def _choose(node_name: str, node: ChoiceNode, scope: Scope) -> str:
    for index, choice in enumerate(node.choices):
        value = _evaluate(node_name, f"choices[{index}].when",
                          lambda c=choice: compile_expression(c.when).evaluate_raw(scope))
        if not isinstance(value, bool):
            raise StepFailed(f"node {node_name!r} choices[{index}].when gave {value!r}, not true/false")
        if value:
            return choice.next
    return node.default


def wake_time(node_name: str, node: WaitNode, scope: Scope) -> float:
    """The epoch second a wait node's ``until`` expression names."""
    return _timestamp(node_name, "until", node.until, scope)


def await_timeout(node_name: str, node: AwaitNode, scope: Scope) -> float | None:
    """The epoch second an await node's ``timeout`` expression names (None: no timeout)."""
    return None if node.timeout is None else _timestamp(node_name, "timeout", node.timeout, scope)


def quorum_count(node_name: str, node: AwaitNode, scope: Scope) -> int:
    """How many distinct principals an await node's quorum needs (its ``count``: a number or an expression)."""
    assert node.quorum is not None
    count = node.quorum.count
    value = count if isinstance(count, int) else _evaluate(
        node_name, "quorum.count", lambda: compile_expression(count).evaluate_raw(scope))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StepFailed(f"node {node_name!r} quorum.count gave {value!r}, not a whole number of 1 or more")
    return value


def gather_arrival(node_name: str, node: GatherNode, scope: Scope) -> Arrival:
    """Evaluate a gather node's ``group``, ``close`` and ``input`` for one arriving instance."""
    group = _evaluate(node_name, "group", lambda: compile_expression(node.group).evaluate_raw(scope))
    if not isinstance(group, str | int) or isinstance(group, bool) or str(group) == "":
        raise StepFailed(f"node {node_name!r} group gave {group!r}, not a non-empty string")
    name = batch_name(node, str(group))
    if len(name) > MAX_GROUP_LENGTH:
        raise StepFailed(f"node {node_name!r} group gives a batch name of {len(name)} characters "
                         f"(at most {MAX_GROUP_LENGTH})")
    close_at = _timestamp(node_name, "close", node.close, scope)
    contribution = _evaluate(node_name, "input", lambda: compile_template(node.input).evaluate(scope))
    return Arrival(name, str(group), close_at, contribution, node.close_early, node.service, node.action)


def _timestamp(node_name: str, where: str, source: str, scope: Scope) -> float:
    value = _evaluate(node_name, where, lambda: compile_expression(source).evaluate_raw(scope))
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise StepFailed(f"node {node_name!r} {where} gave {value!r}, not a timestamp") from exc
    if not isinstance(value, datetime):
        raise StepFailed(f"node {node_name!r} {where} gave {value!r}, not a timestamp")
    if value.tzinfo is None:
        raise StepFailed(f"node {node_name!r} {where} gave {value.isoformat()} without a time zone")
    return value.timestamp()


def _evaluate(node_name: str, where: str, fn: Any) -> Any:
    try:
        return fn()
    except ExpressionError as exc:
        raise StepFailed(f"node {node_name!r} {where}: {exc}") from exc


def arrival_document(definition: Definition, nxt: Next) -> dict[str, Any]:
    """The ``gather`` document of an arrival: which batch, closing when, from which node."""
    arrival = nxt.arrival
    assert arrival is not None
    return {"name": arrival.name, "group": arrival.group, "close_at": repr(arrival.close_at),
            "close_early": arrival.close_early, "service": arrival.service, "action": arrival.action,
            "node": nxt.node, "workflow": definition.name, "version": definition.version or 0}
