"""The graph of a definition: every edge names a node, every node is reachable and can finish.

Read leniently from the raw JSON (each node type lists its own edges: ``raw_edges`` of
:mod:`engine.definitions.nodes`), so that a file with structural problems still gets its
graph problems reported in the same pass.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from engine.definitions.nodes import NODE_CLASSES, NODE_TYPES, Edge, escape_pointer, raw_node_class
from engine.definitions.problems import did_you_mean
from engine.errors import Problem

#: The distinct edge readers, for a node whose type is unknown (its edges are checked anyway).
_ANY_EDGES = list({cls.raw_edges.__func__: cls for cls in NODE_CLASSES}.values())  # type: ignore[attr-defined]


def raw_edges(node: Any) -> Iterator[Edge]:
    """Every edge leaving the raw node ``node`` (of any type it could be, when its type is unknown)."""
    if not isinstance(node, dict):
        return
    cls = raw_node_class(node)
    for reader in [cls] if cls is not None else _ANY_EDGES:
        yield from reader.raw_edges(node)


def _known(node: Any) -> bool:
    return raw_node_class(node) is not None


def check_graph(start: Any, nodes: dict[str, Any]) -> list[Problem]:
    """Unknown targets, unreachable nodes and nodes that cannot finish.

    A node with a broken edge (unknown target, missing or malformed edges) counts as able to
    finish, and unreachable nodes are not reported while any edge is broken: those would be
    consequences of the broken edge, which is reported itself.
    """
    problems: list[Problem] = []
    successors: dict[str, list[str]] = {name: [] for name in nodes}
    broken = {name for name, node in nodes.items() if _known(node) and NODE_TYPES[node["type"]].raw_broken(node)}
    for name, node in nodes.items():
        known = _known(node)
        for edge in raw_edges(node):
            if isinstance(edge.target, str) and edge.target in nodes:
                successors[name].append(edge.target)
            elif known:
                broken.add(name)
                if isinstance(edge.target, str):  # other types: reported by the model
                    problems.append(Problem(f"/nodes/{escape_pointer(name)}{edge.pointer}",
                                            f"unknown node {edge.target!r}{did_you_mean(edge.target, nodes)}"))
    if isinstance(start, str) and start not in nodes:
        problems.append(Problem("/start", f"unknown node {start!r}{did_you_mean(start, nodes)}"))
    elif isinstance(start, str) and not broken:
        reached = closure([start], successors)
        problems.extend(
            Problem(
                f"/nodes/{escape_pointer(name)}",
                f"node {name!r} cannot be reached from start {start!r}: add a transition to it or remove it",
            )
            for name in nodes
            if name not in reached
        )
    terminals = [n for n, node in nodes.items() if _known(node) and NODE_TYPES[node["type"]].ends]
    if not terminals:
        problems.append(
            Problem("/nodes", 'no terminal node: add one, e.g. "done": {"type": "terminal", "status": "succeeded"}')
        )
        return problems
    predecessors: dict[str, list[str]] = {name: [] for name in nodes}
    for name, targets in successors.items():
        for target in targets:
            predecessors[target].append(name)
    finishing = closure([*terminals, *broken], predecessors)
    problems.extend(
        Problem(
            f"/nodes/{escape_pointer(name)}",
            f"no terminal node can be reached from {name!r}, so an instance there never ends: "
            "add a transition that leads to a terminal node",
        )
        for name, node in nodes.items()
        if name not in finishing and _known(node)
    )
    return problems


def closure(seeds: list[str], graph: dict[str, list[str]]) -> set[str]:
    """The nodes reachable from ``seeds`` (themselves included) along ``graph`` (node -> next nodes)."""
    seen = set(seeds)
    queue = deque(seeds)
    while queue:
        for nxt in graph[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen
