"""The expressions of a definition: each compiles, and its plain references name something.

``params.X`` must name a parameter, ``context.X`` a node and ``instance.X`` a field of the
instance root. References are found on the expression's tokens, so text inside string
literals is never mistaken for one; computed references (``params[name]``) are not checked.
Each node type lists its own expressions (``raw_expressions`` of :mod:`engine.definitions.nodes`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from engine.definitions.nodes import escape_pointer, raw_node_class
from engine.definitions.problems import did_you_mean
from engine.errors import ExpressionError, Problem
from engine.expressions.cel import compile_expression, template_strings
from engine.expressions.scan import INSTANCE_FIELDS


def expression_sources(nodes: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(pointer, source) of every expression in the nodes (raw JSON; wrong types skipped)."""
    for name, node in nodes.items():
        cls = raw_node_class(node)
        if cls is None:
            continue
        base = f"/nodes/{escape_pointer(name)}"
        for found in cls.raw_expressions(node):
            if found.template:
                yield from template_strings(found.source, f"{base}{found.pointer}")
            else:
                yield f"{base}{found.pointer}", found.source


def check_expressions(nodes: dict[str, Any], parameters: dict[str, Any] | None) -> list[Problem]:
    """Expressions that do not compile, and plain references to nothing."""
    problems = []
    for pointer, source in expression_sources(nodes):
        try:
            expression = compile_expression(source)
        except ExpressionError as exc:
            problems.append(Problem(pointer, str(exc)))
            continue
        for path in sorted(expression.paths):
            if len(path) < 2:
                continue
            root, key = path[0], path[1]
            if root == "params" and parameters is not None and key not in parameters:
                problems.append(Problem(pointer, f"unknown parameter {key!r}{did_you_mean(key, parameters)}: "
                                                 'add it to "parameters" or fix the name'))
            elif root == "instance" and key not in INSTANCE_FIELDS:
                problems.append(Problem(
                    pointer, f"unknown field {key!r} in 'instance.{key}'{did_you_mean(key, INSTANCE_FIELDS)}: "
                             f"the instance root has {', '.join(sorted(INSTANCE_FIELDS))}"))
            elif root == "context" and key not in nodes:
                problems.append(Problem(pointer, f"unknown node {key!r} in 'context.{key}'{did_you_mean(key, nodes)}: "
                                                 "the context holds what each node returned, under the node's name"))
    return problems
