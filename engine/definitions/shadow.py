"""Where a shadow instance stops: every path from ``start`` to a node with an external effect passes a stop.

A node declares an external effect with ``"effect": "external"`` (it sends orders, puts work in
front of people, calls a system outside the run); any node may carry ``"shadow": "stop"``: a
shadow instance (``Engine.start(..., shadow=True)``) ends there, succeeded, before that node runs.
On publish (and ``tradeflow definitions validate``), a node with an external effect that a
shadow could reach from ``start`` without meeting a stop is refused, with its JSON pointer and
the path that reaches it. Read leniently from the raw JSON, like :mod:`engine.definitions.graph`.

At run time the engine adds two guards of its own (:func:`engine.runtime.outcomes.resolve`): a shadow
never joins a ``gather`` node's batch, and a service action sees ``instance.shadow`` (so the
trading platform's actions keep a shadow's writes in its run's own namespace and its brokerage
adapter refuses a shadow's orders).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from engine.definitions.graph import raw_edges
from engine.definitions.nodes import escape_pointer
from engine.errors import Problem


def is_stop(node: Any) -> bool:
    """True for a raw node marked ``"shadow": "stop"``."""
    return isinstance(node, dict) and node.get("shadow") == "stop"


def has_effect(node: Any) -> bool:
    """True for a raw node marked ``"effect": "external"``."""
    return isinstance(node, dict) and node.get("effect") == "external"


def shadow_paths(start: Any, nodes: dict[str, Any]) -> dict[str, list[str]]:
    """Every node a shadow can run from ``start``, with one shortest path to it (stops not entered)."""
    if not isinstance(start, str) or start not in nodes:
        return {}
    paths: dict[str, list[str]] = {}
    todo: deque[tuple[str, list[str]]] = deque([(start, [start])])
    while todo:
        name, path = todo.popleft()
        if name in paths or is_stop(nodes[name]):
            continue
        paths[name] = path
        for edge in raw_edges(nodes[name]):
            if isinstance(edge.target, str) and edge.target in nodes and edge.target not in paths:
                todo.append((edge.target, [*path, edge.target]))
    return paths


def check_shadow_stops(start: Any, nodes: dict[str, Any]) -> list[Problem]:
    """A problem per node with an external effect that a shadow reaches without passing a stop."""
    problems = []
    for name, path in shadow_paths(start, nodes).items():
        if has_effect(nodes[name]):
            route = " -> ".join(path)
            problems.append(Problem(
                f"/nodes/{escape_pointer(name)}/effect",
                f"node {name!r} has an external effect, and a shadow instance reaches it without a stop "
                f"({route}): add \"shadow\": \"stop\" to {name!r} or to a node before it on that path"))
    return problems


__all__ = ["check_shadow_stops", "has_effect", "is_stop", "shadow_paths"]
