"""Which context entries a definition can still read from each node: what ``drop_after_use`` deletes.

A definition's ``drop_after_use`` names nodes whose context entries are big documents that
only the next steps read (the portfolio manager's order request, read by the calculation
alone). An entry is *unread* at a node when no expression of that node, nor of any node it
can lead to (every edge: transitions, choices, defaults, signals, timeouts), reads it: a plain
path ``context.<entry>``. An expression that reads the context in any other way (``context``
itself, ``context[name]``) reads every entry. Everything that reads an instance's context
while it runs -- inputs, choices, waits, awaits, gathers, results -- is such an expression,
so an unread entry is never read again by the engine: the step that lands the instance on
that node deletes it (:mod:`engine.runtime.pipeline`). Derived once per definition, from
its JSON.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.definitions.graph import closure, raw_edges
from engine.definitions.nodes import Definition
from engine.definitions.references import expression_sources
from engine.expressions.cel import compile_expression

#: What a node reads of the context: entry names, or None for all of them.
Reads = frozenset[str] | None


def _reads(sources: Iterable[str]) -> Reads:
    """The context entries the expressions ``sources`` read (None: any of them)."""
    read: set[str] = set()
    for source in sources:
        expression = compile_expression(source)
        if "context" not in expression.roots:
            continue
        paths = [path for path in expression.paths if path[0] == "context"]
        if not paths or any(len(path) < 2 for path in paths):
            return None  # the context read some other way than by a plain path: all of it
        read.update(path[1] for path in paths)
    return frozenset(read)


def unread_entries(definition: Definition) -> dict[str, tuple[str, ...]]:
    """Per node, the entries of ``definition.drop_after_use`` that neither it nor any node after it reads."""
    droppable = tuple(dict.fromkeys(definition.drop_after_use))
    if not droppable:
        return {}
    raw = definition.model_dump(mode="json", exclude_none=True)["nodes"]
    reads = {name: _reads(source for _pointer, source in expression_sources({name: node}))
             for name, node in raw.items()}
    successors = {name: [edge.target for edge in raw_edges(node) if edge.target in raw] for name, node in raw.items()}
    unread: dict[str, tuple[str, ...]] = {}
    for name in raw:
        read: set[str] = set()
        for reached in closure([name], successors):
            here = reads[reached]
            if here is None:  # read whole somewhere after: every entry stays
                unread[name] = ()
                break
            read |= here
        else:
            unread[name] = tuple(entry for entry in droppable if entry not in read)
    return unread
