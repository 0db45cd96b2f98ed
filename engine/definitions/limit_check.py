"""The limits of a definition's nodes: each rate window is sensible, each concurrency group agrees.

Ranges and types are the models' (:class:`engine.definitions.nodes.RateLimit`,
:class:`engine.definitions.nodes.ConcurrencyLimit`); the key expressions are checked with every
other expression (:mod:`engine.definitions.references`). What is left is what spans a node or
several: a rate whose window (``burst / per_second``) is longer than a day, nodes that name
the same concurrency ``group`` with a different key or size, and a gather node's limit that reads
what its batch step does not have (one instance's ``context`` or ``instance``).
"""

from __future__ import annotations

from typing import Any

from engine.definitions.nodes import GATHER_LIMIT_DATA, escape_pointer
from engine.errors import ExpressionError, Problem
from engine.expressions.cel import compile_expression

#: The longest window of a rate limit (``burst / per_second``), in seconds.
MAX_WINDOW_SECONDS = 86400


def check_limits(nodes: dict[str, Any]) -> list[Problem]:
    """Rate windows over a day, and concurrency groups whose nodes disagree on key or max."""
    problems: list[Problem] = []
    groups: dict[str, tuple[str, Any, Any]] = {}
    for name, node in nodes.items():
        limits = node.get("limits") if isinstance(node, dict) else None
        if not isinstance(limits, dict):
            continue
        base = f"/nodes/{escape_pointer(name)}/limits"
        rate = limits.get("rate")
        if isinstance(rate, dict) and node.get("type") == "gather":
            problems.extend(_batch_scope_problems(rate, f"{base}/rate"))
        if isinstance(rate, dict):
            per_second, burst = rate.get("per_second"), rate.get("burst")
            if isinstance(per_second, int | float) and per_second > 0 and isinstance(burst, int) and burst > 0 \
                    and burst / per_second > MAX_WINDOW_SECONDS:
                problems.append(Problem(f"{base}/rate/burst",
                                        f"burst {burst} at {per_second:g}/s is a window of {burst / per_second:.0f}s"
                                        f" (over a day): lower burst or raise per_second"))
        concurrency = limits.get("concurrency")
        if isinstance(concurrency, dict) and isinstance(concurrency.get("group"), str):
            group = concurrency["group"]
            seen = groups.setdefault(group, (name, concurrency.get("key"), concurrency.get("max")))
            if (seen[1], seen[2]) != (concurrency.get("key"), concurrency.get("max")):
                problems.append(Problem(f"{base}/concurrency",
                                        f"group {group!r} is {seen[1]!r} max {seen[2]} at node {seen[0]!r}: "
                                        "every node of a group names the same key and max"))
    return problems


def _batch_scope_problems(rate: dict[str, Any], base: str) -> list[Problem]:
    """A gather node's rate ``key``/``cost`` read only ``params``, ``data.members`` and ``data.batch``."""
    problems: list[Problem] = []
    for field in ("key", "cost"):
        source = rate.get(field)
        if not isinstance(source, str) or not source:
            continue
        try:
            paths = compile_expression(source).paths
        except ExpressionError:
            continue  # reported with every other expression (engine.definitions.references)
        for path in sorted(paths):
            if path[0] in ("context", "instance") or (path[0] == "data" and len(path) > 1
                                                      and path[1] not in GATHER_LIMIT_DATA):
                problems.append(Problem(
                    f"{base}/{field}",
                    f"{'.'.join(path[:2])!r}: a gather node's limit is evaluated once for the whole batch; it "
                    "reads params, data.members (the members' contributions) and data.batch (id, name, group, "
                    "size) -- put what it needs in the node's input"))
                break
    return problems
