"""Safe expressions: the Common Expression Language (CEL) over ``data``, ``params``, ``context`` and ``instance``.

Every string in a node's ``input``, a terminal's ``result``, a choice's ``when`` and a wait's
``until`` is a CEL expression. CEL is not Turing-complete: no loops other than the
comprehension macros over finite lists and maps, no assignment, no I/O, no Python. The
expressions see four roots -- ``data`` (the instance's initial data), ``params`` (the
version's parameters), ``context`` (node name -> the data that node returned) and the
read-only ``instance`` (the step being run: ``id``, ``workflow``, ``version``, ``run``,
``node``, ``seq``, ``attempt``; e.g. ``instance.id + ':' + instance.node + ':' +
string(instance.seq)`` names one step, the same on every redelivery and retry of it, which
makes an idempotency key for an external call) -- plus the CEL built-ins and the functions
registered with :func:`register_function`::

    compile_expression("size(context.calculate.orders) == 0").evaluate(scope)
    compile_expression("at(data.run_date, '09:30', 'America/Toronto') + duration('5m')")
    compile_expression("now() + duration('30m')")     # CEL durations: h, m, s, ms, us, ns
    compile_expression("now() + days(3)")              # ... and no days; hence days(n)

Engine built-ins: ``now()``, ``at(date, 'HH:MM', tz)``, ``date_of(timestamp, tz)``,
``days(n)``. Plugins add domain functions (``market_open(date, exchange)``, ...).

Compiling never runs anything: the source is scanned, parsed by the Rust CEL parser and
checked. ``compile_expression`` rejects (``ExpressionError``):

- a source longer than ``MAX_SOURCE_CHARS`` (4096) or of more than ``MAX_TOKENS`` (512) tokens,
- brackets/parentheses nested deeper than ``MAX_NESTING`` (32),
- comprehension macros (``map``, ``filter``, ``all``, ``exists``, ``exists_one``) nested
  more than ``MAX_COMPREHENSION_NESTING`` (3) deep,
- a string literal longer than ``MAX_STRING_LITERAL_CHARS`` (1024),
- more than ``MAX_ADDITIONS`` (32) ``+`` operators (see below),
- names starting with ``__``, a parse error, a root other than the four above
  (comprehension variables and CEL type names such as ``int`` aside), a function that is
  neither a CEL built-in nor registered.

Bounds at run time (the CEL runtime has no budget of its own, so the engine adds one):

- Comprehensions are metered in work, never by the clock, so the same input gives the same
  outcome on a busy machine. The engine inserts a call at the start of every comprehension
  body (it sees the iteration variable) and around the value a ``map`` adds to its result.
  Values are measured in *units*: 1 per scalar, list element or map entry (plus their
  contents), 1 per 256 characters of a string. An iteration costs one step plus one per 16
  units of: its variable, the root values and enclosing variables its arguments read (what
  the body can touch), and what its ``map``/``filter`` has accumulated so far (the runtime
  deep-copies the accumulator on every iteration, so these macros are quadratic in the size
  of their result). An evaluation fails with ``ExpressionError`` after ``MAX_STEPS``
  (200,000) steps. Measured on a quiet core: three nested loops over 100 elements stop in
  about 0.1 s instead of running for minutes, a ``map`` of 2,000 lists of 100 stops at about
  200 elements instead of running for 30 s; ``map`` over 2,000 numbers passes (0.2 s).
- Outside comprehensions, work is linear in the operators (at most 512 tokens) times the
  size of the values they touch, except ``+`` on lists, which copies: a chain of k list
  additions copies k^2/2 lists, hence at most 32 of them (32 additions of a 10,000-element
  list take about 0.15 s). So results are bounded by the data: at most about
  ``len(source) x size(referenced data)`` per comprehension step.
- Integers are 64-bit; overflow, division by zero, a missing key, a wrong type all raise
  ``ExpressionError`` naming the expression and the reason. Integers in the data beyond
  64 bits reach CEL as doubles. Iteration over a map has no defined order (CEL semantics).

Evaluation cost: a fresh ``cel.Context`` is built for every evaluation (the Rust context is
not thread-safe, the compiled program is immutable and shared), which costs about 3 us; a
simple compiled expression such as ``data.x + 1`` evaluates in about 4 us, ``now() +
duration('30m')`` in 4 us, ``at(...) + duration('5m')`` in 11 us. CEL converts every root it
is given into its own values first, in time proportional to their size, so it is given only
the parts of a root an expression reads (``context.calc.total`` costs the same however big
the rest of the context is). Plain paths (``data.account_id``, ``context.fetch_holdings``)
skip CEL altogether and are read straight from the scope in under 1 us.

An expression whose functions are all pure (CEL's own, ``at``, ``date_of``, ``days``, and those
registered with ``pure=True``; not ``now()``) and whose reads are all scalars remembers its
last results (up to ``MEMO_SIZE``) by the values it read: the review cut-off
``market_close(data.run_date, params.exchange) - duration(params.review_cutoff)`` that a
morning's accounts share is computed by CEL once, then answered in about 1 us. One that reads
a list or a whole mapping, or the ``instance`` root (each step's own), is always evaluated.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import cel

from engine.errors import ExpressionError
from engine.expressions.functions import generation, lookup, register_function, registered_functions
from engine.expressions.scan import (
    BUILTIN_FUNCTIONS,
    COMPREHENSIONS,
    MAX_ADDITIONS,
    MAX_COMPREHENSION_NESTING,
    MAX_NESTING,
    MAX_SOURCE_CHARS,
    MAX_STRING_LITERAL_CHARS,
    MAX_TOKENS,
    OPERATORS,
    OUT_FUNCTION,
    ROOTS,
    STEP_FUNCTION,
    TYPE_NAMES,
    Analysis,
    SiteReads,
    analyse,
    instrument,
    quote,
    scan,
    site_reads,
    suggest,
)

__all__ = [
    "MAX_ADDITIONS",
    "MAX_COMPREHENSION_NESTING",
    "MAX_NESTING",
    "MAX_SOURCE_CHARS",
    "MAX_STEPS",
    "MAX_STRING_LITERAL_CHARS",
    "MAX_TOKENS",
    "ROOTS",
    "Expression",
    "Scope",
    "Template",
    "compile_expression",
    "compile_template",
    "register_function",
    "registered_functions",
    "template_strings",
]


class _QuietCallbackFailures(logging.Filter):
    """The ``cel`` package logs a warning whenever a Python function fails; we raise instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Python function '")


logging.getLogger("cel").addFilter(_QuietCallbackFailures())

MAX_STEPS = 200_000
#: Units of data (see the module docstring) that cost one comprehension step.
UNITS_PER_STEP = 16
#: Characters of a string that count as one unit.
CHARS_PER_UNIT = 256


@dataclass(frozen=True)
class Scope:
    """What an expression sees: the roots and the clock (``now`` must be timezone-aware)."""

    data: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The step being evaluated for (``id``, ``workflow``, ``version``, ``run``, ``node``, ``seq``,
    #: ``attempt``, ``shadow``); read-only: nothing an expression returns is written back.
    instance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("Scope.now must be timezone-aware (use datetime.now(UTC))")

    @classmethod
    def of(cls, data: Mapping[str, Any], params: Mapping[str, Any], context: Mapping[str, Any], when: float,
           instance: Mapping[str, Any]) -> Scope:
        """The scope of these roots at epoch second ``when`` (``now`` in UTC): the same as
        ``Scope(data, params, context, datetime.fromtimestamp(when, UTC), instance)``, made in one step
        (the runtime makes two per step; a frozen dataclass sets its fields one ``object.__setattr__``
        at a time, and a UTC ``now`` needs no check). ``now`` is made when first read: most steps'
        expressions are plain paths or remembered results, which never read it."""
        scope = object.__new__(cls)
        object.__setattr__(scope, "__dict__", {"data": data, "params": params, "context": context,
                                                "instance": instance, "_when": when})
        return scope

    def __getattr__(self, name: str) -> Any:
        """``now`` of a scope made by :meth:`of`, on its first read (any other missing name: AttributeError)."""
        when = self.__dict__.get("_when") if name == "now" else None
        if when is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        now = self.__dict__["now"] = datetime.fromtimestamp(when, UTC)
        return now

    def root(self, name: str) -> Mapping[str, Any]:
        """The root called ``name`` (``data``, ``params``, ``context`` or ``instance``)."""
        value = getattr(self, name)
        return value if isinstance(value, dict) else dict(value)


# --------------------------------------------------------------------------- expressions


class _BudgetExceeded(Exception):
    pass


class Expression:
    """A compiled, checked expression. Safe to share between threads: immutable but for the results it
    remembers (see the module docstring), which are immutable values, each a function of its key."""

    __slots__ = ("_fast_path", "_memo", "_needed", "_plan", "_program", "functions", "paths", "roots", "source")

    source: str
    roots: frozenset[str]
    functions: frozenset[str]
    paths: frozenset[tuple[str, ...]]

    def __init__(
        self, source: str, program: Any, analysis: Analysis, functions: frozenset[str], reads: list[SiteReads]
    ) -> None:
        self.source = source
        self._program = program
        self.roots = frozenset(analysis.free & ROOTS)
        self.functions = functions
        # Plain paths from a root, e.g. ('params', 'lookback_days'); used to check references.
        self.paths = frozenset(p for p in analysis.paths if p[0] in ROOTS)
        self._needed = _needed_parts(self.paths)
        self._plan = _MeterPlan.of(analysis, reads) if analysis.sites else None
        path = _PLAIN_PATH.fullmatch(source.strip())
        self._fast_path = tuple(source.strip().split(".")) if path else None
        # (the values it reads, the functions' generation) -> result: see _remember; None when it
        # cannot be remembered (a comprehension, a whole root, the instance root: each step's own).
        self._memo: dict[tuple[Any, ...], Any] | None = None if (
            self._fast_path is not None or self._plan is not None or "instance" in self._needed
            or any(needed is None for needed in self._needed.values())) else {}

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def evaluate(self, scope: Scope) -> Any:
        """Evaluate to plain JSON-able Python: timestamps as ISO-8601 strings, durations as seconds."""
        value = self.evaluate_raw(scope)
        if self._fast_path is not None:
            return value
        try:
            return _to_json(value)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ExpressionError(f"expression {quote(self.source)} gave a value that is not JSON: {exc}") from None

    def evaluate_raw(self, scope: Scope) -> Any:
        """Evaluate to CEL's own Python result (timestamps stay ``datetime``, durations ``timedelta``)."""
        if self._fast_path is not None:
            return self._read_path(scope)
        key = self._memo_key(scope) if self._memo is not None else None
        if key is not None:
            try:
                return self._memo[key]  # type: ignore[index]
            except KeyError:
                pass
        value = self._execute(scope)
        if key is not None and isinstance(value, _REMEMBERED):
            memo = self._memo
            assert memo is not None
            if len(memo) >= MEMO_SIZE:
                memo.clear()
            memo[key] = value
        return value

    def _memo_key(self, scope: Scope) -> tuple[Any, ...] | None:
        """What this evaluation's result depends on -- the values it reads (present or not, with their
        type) and the functions' generation -- or None when it may not be remembered: a value read
        is not a scalar, or a function it calls is not pure (``register_function(..., pure=True)``)."""
        for name in self.functions:
            function = lookup(name)
            if function is not None and not function.pure:
                return None
        out: list[Any] = [generation()]
        for root, needed in self._needed.items():
            if not _read_values(scope.root(root), needed, out):
                return None
        return tuple(out)

    def _execute(self, scope: Scope) -> Any:
        context = cel.Context()
        for root, needed in self._needed.items():
            context.add_variable(root, _prune(scope.root(root), needed))
        for name in self.functions:
            function = lookup(name)
            if function is None:
                if name in BUILTIN_FUNCTIONS:
                    continue
                raise ExpressionError(f"expression {quote(self.source)}: function {name!r} is not registered")
            context.add_function(name, function.fn(scope.now) if function.scoped else function.fn)
        meter = _Meter(self._plan, scope) if self._plan is not None else None
        if meter is not None:
            context.add_function(STEP_FUNCTION, meter.step)
            context.add_function(OUT_FUNCTION, meter.out)
        try:
            value = self._program.execute(context)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            if meter is not None and meter.exceeded:
                raise self._over_budget(meter.exceeded) from None
            raise ExpressionError(f"expression {quote(self.source)} failed: {_reason(exc)}") from None
        if meter is not None and meter.exceeded:
            raise self._over_budget(meter.exceeded)
        return value

    def _over_budget(self, reason: str) -> ExpressionError:
        return ExpressionError(
            f"expression {quote(self.source)} failed: {reason} (map/filter/all/exists over large "
            "or nested lists); move this work into a service"
        )

    def _read_path(self, scope: Scope) -> Any:
        path = self._fast_path
        assert path is not None
        value: Any = getattr(scope, path[0])
        if type(value) is not dict:
            value = scope.root(path[0])
        for key in path[1:]:
            if type(value) is not dict and not isinstance(value, Mapping):
                raise ExpressionError(
                    f"expression {quote(self.source)} failed: {key!r} selected from a {_cel_type(value)}"
                )
            try:
                value = value[key]
            except KeyError:
                raise ExpressionError(f"expression {quote(self.source)} failed: no such key {key!r}") from None
        return value


#: The results an expression remembers (immutable: the caller may keep them): scalars, timestamps, durations.
_REMEMBERED = (str, int, float, bool, type(None), datetime, timedelta)
#: At most this many results remembered per expression (then it starts afresh).
MEMO_SIZE = 256
#: Tokens of a memo key (see _read_values): a mapping read into, a key it does not have.
_MAPPING, _ABSENT = "{", "-"


def _read_values(value: Any, needed: Any, out: list[Any]) -> bool:
    """Append to ``out`` what an expression reading ``needed`` of ``value`` sees (what ``_prune`` hands
    CEL), as hashable tokens: False when a value read is not a scalar (it is then not remembered).
    Scalars are tagged with their type (``1``, ``1.0`` and ``true`` are told apart; floats by their hex)."""
    kind = type(value)
    if needed is not None and (kind is dict or isinstance(value, Mapping)):
        out.append(_MAPPING)
        for key, sub in needed.items():
            if key in value:
                if not _read_values(value[key], sub, out):
                    return False
            else:
                out.append(_ABSENT)
        return True
    if kind is str or kind is int or kind is bool or value is None:
        out.append((kind, value))
        return True
    if kind is float:
        out.append((kind, value.hex()))
        return True
    return False


def _needed_parts(paths: frozenset[tuple[str, ...]]) -> dict[str, Any]:
    """Per root, a trie of the keys an expression reads (``None``: all of it).

    CEL converts every variable into its own values before evaluating, which costs time in
    proportion to the variable's size; handing it only the parts the expression reads makes
    ``context.calculate.total > 0`` cost the same whatever else the context holds.
    """
    tries: dict[str, Any] = {}
    for root, *keys in sorted(paths, key=len):
        if not keys:
            tries[root] = None
            continue
        node = tries.setdefault(root, {})
        for key in keys[:-1]:
            if node is None:
                break
            node = node.setdefault(key, {})
        else:
            if node is not None:
                node[keys[-1]] = None
    return tries


def _prune(value: Any, needed: Any) -> Any:
    if needed is None or not isinstance(value, Mapping):
        return value
    return {key: _prune(value[key], sub) for key, sub in needed.items() if key in value}


_PLAIN_PATH = re.compile(r"(?:data|params|context|instance)(?:\.(?!(?:true|false|null|in)\b)[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class _MeterPlan:
    """Per comprehension site: kind, nested sites, and what its arguments read (compile time)."""

    filters: tuple[bool, ...]
    children: tuple[tuple[int, ...], ...]
    paths: tuple[tuple[tuple[str, ...], ...], ...]
    binders: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, analysis: Analysis, reads: list[SiteReads]) -> _MeterPlan:
        """The plan of an analysed expression."""
        sites = analysis.sites
        return cls(
            filters=tuple(s.macro == "filter" for s in sites),
            children=tuple(tuple(k for k, s in enumerate(sites) if s.parent == n) for n in range(len(sites))),
            paths=tuple(r.paths for r in reads),
            binders=tuple(r.binders for r in reads),
        )


_SCALARS = (int, float, bool, type(None))


def units(value: Any) -> int:
    """The size of a value in metering units: 1 per scalar, element or entry, 1 per 256 characters."""
    if isinstance(value, _SCALARS):
        return 1
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        total += 1
        if isinstance(item, str | bytes):
            total += len(item) // CHARS_PER_UNIT
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return total


def _path_units(scope: Scope, path: tuple[str, ...]) -> int:
    value: Any = scope.root(path[0])
    for key in path[1:]:
        if not isinstance(value, Mapping) or key not in value:
            return 0
        value = value[key]
    return units(value)


class _Meter:
    """Meters the comprehensions of one evaluation in steps of work (see the module docstring)."""

    __slots__ = ("_acc", "_counts", "_plan", "_static", "_var", "exceeded", "spent")

    def __init__(self, plan: _MeterPlan, scope: Scope) -> None:
        self._plan = plan
        n = len(plan.filters)
        self._counts = [0] * n
        self._acc = [0] * n  # units accumulated by each map/filter in its current run
        self._var = [0] * n  # units of each site's current iteration variable
        self._static = [sum(_path_units(scope, p) for p in paths) for paths in plan.paths]
        self.spent = 0
        self.exceeded = ""

    def step(self, site: int, variable: Any) -> bool:
        """Called at the start of every iteration of ``site`` with its variable: charge the work."""
        self._counts[site] += 1
        for child in self._plan.children[site]:  # a new iteration starts new inner comprehensions
            self._counts[child] = self._acc[child] = 0
        size = units(variable)
        self._var[site] = size
        touched = size + self._static[site] + self._acc[site]
        for enclosing in self._plan.binders[site]:
            touched += self._var[enclosing]
        if self._plan.filters[site]:
            self._acc[site] += size  # at most the element is kept
        self.spent += 1 + touched // UNITS_PER_STEP
        if self.spent <= MAX_STEPS:
            return True
        self.exceeded = f"more than {MAX_STEPS} comprehension steps"
        raise _BudgetExceeded(self.exceeded)

    def out(self, site: int, value: Any) -> Any:
        """Called with the value a ``map`` adds to its result: measure it, hand it back."""
        self._acc[site] += units(value)
        return value


def _cel_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    return "null" if value is None else type(value).__name__


_NOISE = re.compile(r"\s*Check (that|function|the|argument)[^.]*\.?\s*$|\s*CEL does not coerce.*$", re.DOTALL)


_FUNCTION_FAILED = re.compile(r"^Function '(\w+)' error: (?:Python function call failed: )?(?:\w+: )?")


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, KeyError):
        return f"no such key {text}"
    failed = _FUNCTION_FAILED.match(text)
    if failed:
        rest = text[failed.end() :]
        text = rest if rest.startswith(failed.group(1)) else f"{failed.group(1)}(): {rest}"
    text = _NOISE.sub("", text).rstrip(".")
    return text or type(exc).__name__


def _to_json(value: Any) -> Any:
    """CEL's Python result as JSON-able values."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {_json_key(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, bytes):
        raise ValueError("bytes are not JSON; convert them with string(...)")
    raise ValueError(f"a {type(value).__name__} is not JSON")


def _json_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return key if isinstance(key, str) else str(key)


def compile_expression(source: str) -> Expression:
    """Compile and check ``source`` (cached); ``ExpressionError`` says what is wrong and how to fix it.

    Nothing is evaluated: compiling only scans, parses and checks names.
    """
    if not isinstance(source, str):
        raise ExpressionError(f"an expression must be a string, got {type(source).__name__}")
    return _compile(source)


@functools.lru_cache(maxsize=4096)
def _compile(source: str) -> Expression:
    if len(source) > MAX_SOURCE_CHARS:
        raise ExpressionError(
            f"expression {quote(source)} is {len(source)} characters long (at most {MAX_SOURCE_CHARS})"
        )
    if not source.strip():
        raise ExpressionError("an expression must not be empty; write a CEL literal like 'text' or 0 for a constant")
    tokens = scan(source)
    program = _parse(source, source)
    analysis = analyse(tokens)
    reads = site_reads(tokens, analysis.sites)
    if analysis.max_comprehension_nesting > MAX_COMPREHENSION_NESTING:
        raise ExpressionError(
            f"expression {quote(source)}: comprehensions (map/filter/all/exists/exists_one) nested "
            f"{analysis.max_comprehension_nesting} deep (at most {MAX_COMPREHENSION_NESTING})"
        )
    functions = frozenset(set(program.functions()) - OPERATORS)
    for name in sorted(functions):
        if name in BUILTIN_FUNCTIONS or (lookup(name) is not None and name != STEP_FUNCTION):
            continue
        if name in COMPREHENSIONS:
            hint = f"; {name} is a macro: write list.{name}(x, predicate)"
        else:
            hint = suggest(name, [*BUILTIN_FUNCTIONS, *registered_functions()])
            hint += "; plugins add functions with engine.expressions.register_function"
        raise ExpressionError(f"expression {quote(source)}: unknown function {name!r}{hint}")
    unexplained = set(program.variables()) - analysis.free - analysis.binders
    for name in sorted(analysis.free | unexplained):
        if name not in ROOTS and name not in TYPE_NAMES:
            raise ExpressionError(
                f"expression {quote(source)}: unknown root {name!r}{suggest(name, ROOTS)}; "
                "expressions see only data, params, context and instance"
                + (f" (a literal string is quoted: \"'{source.strip()}'\")" if source.strip() == name else "")
            )
    if analysis.sites:
        program = _parse(instrument(source, analysis.sites), source)
    return Expression(source, program, analysis, functions, reads)


def _parse(text: str, source: str) -> Any:
    try:
        return cel.compile(text)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        message = str(exc).replace(f"Failed to parse expression '{text}': ", "").strip()
        message = re.sub(r"^ERROR: <input>:", "", message)
        first = message.splitlines()[0] if message else type(exc).__name__
        raise ExpressionError(f"expression {quote(source)} does not parse: {first}") from None


# --------------------------------------------------------------------------- templates


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def template_strings(value: Any, pointer: str = "") -> Iterator[tuple[str, str]]:
    """Every string of a JSON template with its JSON pointer suffix (no compiling)."""
    if isinstance(value, str):
        yield pointer, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from template_strings(item, f"{pointer}/{_escape(str(key))}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from template_strings(item, f"{pointer}/{index}")


class Template:
    """A JSON value whose strings are expressions; numbers, booleans and null are literals."""

    __slots__ = ("_tree",)

    def __init__(self, tree: Any) -> None:
        self._tree = tree

    def evaluate(self, scope: Scope) -> Any:
        """The JSON value with every expression replaced by its (JSON) result."""
        return _evaluate_tree(self._tree, scope)

    def expressions(self) -> Iterator[tuple[str, Expression]]:
        """(JSON pointer suffix, expression) for every expression, e.g. ``('/account_id', ...)``."""
        yield from _tree_expressions(self._tree, "")


def _build_tree(value: Any, pointer: str) -> Any:
    if isinstance(value, str):
        try:
            return compile_expression(value)
        except ExpressionError as exc:
            raise ExpressionError(f"{pointer or '/'}: {exc}") from None
    if isinstance(value, dict):
        return {str(k): _build_tree(v, f"{pointer}/{_escape(str(k))}") for k, v in value.items()}
    if isinstance(value, list):
        return [_build_tree(v, f"{pointer}/{i}") for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float):
        return _Literal(value)
    raise ExpressionError(f"{pointer or '/'}: a template holds JSON values only, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class _Literal:
    value: Any


def _evaluate_tree(tree: Any, scope: Scope) -> Any:
    if isinstance(tree, Expression):
        return tree.evaluate(scope)
    if isinstance(tree, _Literal):
        return tree.value
    if isinstance(tree, dict):
        return {k: _evaluate_tree(v, scope) for k, v in tree.items()}
    return [_evaluate_tree(v, scope) for v in tree]


def _tree_expressions(tree: Any, pointer: str) -> Iterator[tuple[str, Expression]]:
    if isinstance(tree, Expression):
        yield pointer, tree
    elif isinstance(tree, dict):
        for key, item in tree.items():
            yield from _tree_expressions(item, f"{pointer}/{_escape(key)}")
    elif isinstance(tree, list):
        for index, item in enumerate(tree):
            yield from _tree_expressions(item, f"{pointer}/{index}")


def compile_template(value: Any) -> Template:
    """Compile every string of the JSON value ``value``; ``ExpressionError`` names the first bad one."""
    return Template(_build_tree(value, ""))
