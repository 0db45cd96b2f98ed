"""Where new instances of one definition go from its start node, worked out once per distinct input.

Starting a run resolves the start node for every instance: the choices after it, then the
wait's ``until`` (or an await's ``timeout``, a terminal's ``result``). Those expressions
usually read a few fields of the data that most instances share (the run date, a flag), so
:class:`StartResolver` keeps each outcome under exactly what the expressions can see:

- the parts of ``data`` and ``instance`` they read (their plain paths: an expression is
  given nothing else, see :mod:`engine.expressions.cel`), compared by type and value;
- the definition's ``params`` and an empty context, the same for every instance;
- ``now``, when one of them calls a function of the current time (``now()``: a scoped
  function), so that such outcomes are shared only by instances started at the same instant.

A wait whose time has come is passed at once (:func:`engine.runtime.outcomes.resolve`), which
also depends on ``now``; time only moves on during one start, so an outcome that passed a wait
stays true for the instances after it, and one kept as waiting, given to an instance started
once that time has come, parks it at a timer already due, which the next tick wakes: late, never
wrong. Registered functions are taken to depend on their arguments only (as the engine's scoped
functions depend on ``now`` only). A start that reaches a ``gather`` node is never kept (its
arrival depends on whether the batch has closed, read from Redis), nor is one that failed:
each failing instance gets its own error. The memo lives as long as its resolver (one
``start_many``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from engine.definitions.nodes import AwaitNode, ChoiceNode, Definition, StepNode, TerminalNode, WaitNode
from engine.expressions.cel import Expression, compile_expression, compile_template
from engine.expressions.functions import lookup
from engine.expressions.scan import BUILTIN_FUNCTIONS

#: At most this many distinct outcomes are kept per resolver.
MAX_KEPT = 4096
#: The roots that differ between instances (``params`` is the definition's, ``context`` empty at start).
_VARYING = ("data", "instance")


class _Unkeyable(Exception):
    """A value the key cannot represent exactly (the outcome is then worked out, not kept)."""


Outcome = TypeVar("Outcome")


class StartResolver(Generic[Outcome]):
    """``resolve(data, instance, now, work)``: ``work()``'s outcome, kept under what it can depend on.

    ``work`` resolves the start node for that instance (and may derive more from the result
    alone, e.g. its placement); what it returns is shared by the instances with the same key,
    so it must not be changed afterwards.
    """

    def __init__(self, definition: Definition) -> None:
        expressions = start_expressions(definition)
        #: Outcomes are kept (the start reads nothing from Redis and calls only known functions).
        self.keyed = expressions is not None
        self.reads: dict[str, Any] = {}
        self.timed = False
        self._kept: dict[Any, Outcome] = {}
        for expression in expressions or ():
            for name in expression.functions:
                function = lookup(name)
                if function is None and name not in BUILTIN_FUNCTIONS:
                    self.keyed = False  # evaluating it fails: nothing to keep
                self.timed = self.timed or (function is not None and function.scoped)
            for root, *path in expression.paths:
                if root in _VARYING:
                    _add_path(self.reads, root, path)

    def resolve(self, data: Mapping[str, Any], instance: Mapping[str, Any], now: float,
                work: Callable[[], Outcome]) -> Outcome:
        """The start's outcome for an instance with ``data`` and ``instance`` root at ``now``."""
        if not self.keyed:
            return work()
        try:
            key = (now if self.timed else None,
                   *(_read(data if root == "data" else instance, reads) for root, reads in self.reads.items()))
        except _Unkeyable:
            return work()
        kept = self._kept.get(key)
        if kept is not None:
            return kept
        outcome = work()
        if len(self._kept) < MAX_KEPT:
            self._kept[key] = outcome
        return outcome


def start_expressions(definition: Definition) -> list[Expression] | None:
    """Every expression resolving the start node may evaluate (None: a start whose outcome is not kept)."""
    found: list[Expression] = []
    seen: set[str] = set()
    todo = [definition.start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        node = definition.nodes[name]
        if isinstance(node, ChoiceNode):
            found += [compile_expression(choice.when) for choice in node.choices]
            todo += [choice.next for choice in node.choices] + [node.default]
        elif isinstance(node, WaitNode):
            found.append(compile_expression(node.until))
        elif isinstance(node, AwaitNode):
            if node.timeout is not None:
                found.append(compile_expression(node.timeout))
        elif isinstance(node, TerminalNode):
            if node.result is not None:
                found += [expression for _, expression in compile_template(node.result).expressions()]
        elif not isinstance(node, StepNode):  # a gather (reads Redis), or a node type this does not know
            return None
    return found


def _add_path(tries: dict[str, Any], root: str, path: Iterable[str]) -> None:
    """Add ``root.path`` to the tries of what is read (``None``: the whole value)."""
    keys = list(path)
    if not keys:
        tries[root] = None
        return
    if root in tries and tries[root] is None:
        return
    node = tries.setdefault(root, {})
    for key in keys[:-1]:
        child = node.get(key, {})
        if child is None:
            return
        node = node.setdefault(key, child)
    node[keys[-1]] = None


_ABSENT = ("absent",)


def _read(value: Any, reads: Any) -> Any:
    """What of ``value`` the tries ``reads`` reach (what :mod:`engine.expressions.cel` gives an expression:
    the keys read that are present, and their values), as a hashable value (see :func:`_frozen`)."""
    if reads is None or not isinstance(value, Mapping):
        return _frozen(value)
    return (Mapping, tuple(_read(value[key], sub) if key in value else _ABSENT for key, sub in reads.items()))


def _frozen(value: Any) -> Any:
    """A hashable value equal for equal inputs of the same types only (``1``, ``1.0`` and ``True`` differ)."""
    if type(value) is str:
        return value  # every other value is a tuple
    if value is None or isinstance(value, bool | int | str):
        return (type(value), value)
    if isinstance(value, float):
        return (float, repr(value))  # -0.0 and 0.0 differ; nan equals itself
    if isinstance(value, Mapping):
        return (dict, frozenset((_frozen(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (list, tuple(_frozen(v) for v in value))
    raise _Unkeyable(type(value).__name__)

