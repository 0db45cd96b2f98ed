"""Static analysis of CEL sources for :mod:`engine.expressions.cel` (never runs anything).

A small scanner splits a source into tokens, enforcing the size bounds before the Rust parser
sees it, then finds the free names (roots), the comprehension variables and sites, and the
plain paths (``params.lookback_days``) an expression reads. The comprehension sites are
used to meter evaluation: :func:`instrument` puts a call of the step function at the start
of every comprehension body.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.errors import ExpressionError

MAX_SOURCE_CHARS = 4096
MAX_TOKENS = 512
MAX_NESTING = 32
MAX_COMPREHENSION_NESTING = 3
MAX_STRING_LITERAL_CHARS = 1024
MAX_ADDITIONS = 32
MAX_REGEX_WEIGHT = 1000

ROOTS = frozenset({"data", "params", "context", "instance"})
#: The fields of the read-only ``instance`` root (the step being run: see engine.expressions.Scope).
INSTANCE_FIELDS = frozenset({"id", "workflow", "version", "run", "node", "seq", "attempt", "shadow"})
TYPE_NAMES = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"})
COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})
ACCUMULATING = frozenset({"map", "filter"})
BUILTIN_FUNCTIONS = frozenset(
    {
        "size", "int", "uint", "double", "string", "bytes", "timestamp", "duration", "type", "dyn",
        "matches", "contains", "startsWith", "endsWith",
        "getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek",
        "getHours", "getMinutes", "getSeconds", "getMilliseconds",
    }
)  # fmt: skip
OPERATORS = frozenset(
    {
        "_+_", "_-_", "_*_", "_/_", "_%_", "_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_",
        "_&&_", "_||_", "_?_:_", "_[_]", "!_", "-_", "@in", "@not_strictly_false",
    }
)  # fmt: skip
KEYWORDS = frozenset({"true", "false", "null", "in"})
STEP_FUNCTION = "__tf_step"
OUT_FUNCTION = "__tf_out"


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "ident" | "string" | "number" | "punct"
    text: str
    start: int
    end: int


_RAW_STRING = r"(?:[rR]|[bB][rR]|[rR][bB])(?:'''.*?'''|\"\"\".*?\"\"\"|'[^'\n]*'|\"[^\"\n]*\")"
_STRING = r"[bB]?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\")"
_SCANNER = re.compile(
    rf"(?P<space>[ \t\n\r\f]+|//[^\n]*)"
    rf"|(?P<string>{_RAW_STRING}|{_STRING})"
    r"|(?P<number>0[xX][0-9a-fA-F]+[uU]?|\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>==|!=|<=|>=|&&|\|\||[-+*/%!<>?:.,()\[\]{}])",
    re.DOTALL,
)
_CLOSERS = {")": "(", "]": "[", "}": "{"}


def scan(source: str) -> list[Token]:
    """Split ``source`` into tokens, enforcing the size bounds as it goes."""
    tokens: list[Token] = []
    depth = 0
    additions = 0
    pos = 0
    while pos < len(source):
        match = _SCANNER.match(source, pos)
        if match is None:
            opens_string = source[pos] in "'\""
            what = "unterminated string" if opens_string else f"unexpected character {source[pos]!r}"
            raise ExpressionError(f"expression {quote(source)} does not parse: {what} at column {pos + 1}")
        kind = match.lastgroup or ""
        text = match.group()
        pos = match.end()
        if kind == "space":
            continue
        if kind == "string":
            body = len(text) - len(text.lstrip("rRbB"))
            quote_len = 3 if text[body:].startswith(("'''", '"""')) else 1
            if len(text) - body - 2 * quote_len > MAX_STRING_LITERAL_CHARS:
                raise ExpressionError(
                    f"expression {quote(source)}: a string literal is longer than "
                    f"{MAX_STRING_LITERAL_CHARS} characters; pass large values as data or parameters"
                )
        elif kind == "punct" and text in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise ExpressionError(
                    f"expression {quote(source)}: brackets nested deeper than {MAX_NESTING}; simplify it"
                )
        elif kind == "punct" and text in ")]}":
            depth -= 1
        elif kind == "punct" and text == "+":
            additions += 1
            if additions > MAX_ADDITIONS:
                raise ExpressionError(
                    f"expression {quote(source)}: more than {MAX_ADDITIONS} '+' operators (CEL copies lists "
                    "on every '+'); build long lists or strings in a service"
                )
        elif kind == "ident" and text.startswith("__"):
            raise ExpressionError(f"expression {quote(source)}: names starting with '__' are reserved ({text!r})")
        tokens.append(Token(kind, text, match.start(), pos))
        if len(tokens) > MAX_TOKENS:
            raise ExpressionError(
                f"expression {quote(source)}: more than {MAX_TOKENS} tokens; split the work into a service"
            )
    _check_regex_patterns(tokens, source)
    return tokens


def _check_regex_patterns(tokens: list[Token], source: str) -> None:
    """``matches`` takes a string literal pattern of bounded size: anything else is a regex bomb.

    Compiling a 30,000-character pattern takes the Rust regex engine seconds, 200,000 minutes,
    and no budget can interrupt it. A literal is at most ``MAX_STRING_LITERAL_CHARS`` long, but
    counted repetitions expand it: ``((a{30}){30}){10}`` is 9,000 states, and matching it over
    100,000 characters takes 10-20 s; at most ``MAX_REGEX_WEIGHT`` (1,000) states match the same
    text in about 30 ms (matching is linear in the text).
    """
    for i, tok in enumerate(tokens):
        if tok.kind != "ident" or tok.text != "matches" or i + 1 >= len(tokens) or tokens[i + 1].text != "(":
            continue
        literal = (i + 3 < len(tokens) and tokens[i + 2].kind == "string" and tokens[i + 3].text == ")"
                   and i > 0 and tokens[i - 1].text == ".")
        if not literal:
            raise ExpressionError(
                f"expression {quote(source)}: matches() takes one string literal pattern, as in "
                "text.matches('^[A-Z]{3}$') (a pattern from data could take minutes to compile)"
            )
        weight = regex_weight(tokens[i + 2].text)
        if weight > MAX_REGEX_WEIGHT:
            raise ExpressionError(
                f"expression {quote(source)}: the pattern of matches() expands to about {weight} states "
                f"(at most {MAX_REGEX_WEIGHT}); use smaller counted repetitions such as {{n}}"
            )


_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def regex_weight(pattern: str) -> int:
    """An upper estimate of the states a regex expands to: atoms count 1, ``{n,m}`` multiplies by m."""
    stack: list[list[int]] = [[]]  # per open group: the weights of its items
    pos = 0
    while pos < len(pattern):
        char = pattern[pos]
        repeat = _REPEAT.match(pattern, pos)
        if repeat and stack[-1]:
            count = int(repeat.group(2) or repeat.group(1))  # {n}, {n,} and {n,m}: the larger bound
            stack[-1][-1] *= max(count, 1)
            pos = repeat.end()
            continue
        if char == "\\":
            pos += 2
            stack[-1].append(1)
            continue
        if char == "[":
            end = pattern.find("]", pos + 2)
            pos = len(pattern) if end < 0 else end + 1
            stack[-1].append(1)
            continue
        if char == "(":
            stack.append([])
        elif char == ")" and len(stack) > 1:
            group = stack.pop()
            stack[-1].append(max(sum(group), 1))
        elif char not in "|*+?^$":
            stack[-1].append(1)
        pos += 1
    return sum(sum(group) for group in stack)


@dataclass
class _Frame:
    opener: str
    index: int
    site: int | None = None  # comprehension site number
    binder: str | None = None
    commas: int = 0


@dataclass
class Site:
    macro: str
    parent: int | None
    binder: str = ""
    body_start: int = 0
    body_end: int = 0  # end of the body (the predicate of a three-argument map)
    transform_start: int = -1  # the transform of a three-argument map, else -1
    end: int = 0  # the closing parenthesis


@dataclass(frozen=True)
class SiteReads:
    """What one comprehension's arguments read directly (nested comprehensions' bodies aside)."""

    paths: tuple[tuple[str, ...], ...]  # root paths, one entry per occurrence
    binders: tuple[int, ...]  # enclosing sites whose variable is read, one entry per occurrence


@dataclass
class Analysis:
    free: set[str] = field(default_factory=set)
    binders: set[str] = field(default_factory=set)
    paths: set[tuple[str, ...]] = field(default_factory=set)
    sites: list[Site] = field(default_factory=list)
    max_comprehension_nesting: int = 0


def _ends_operand(token: Token | None) -> bool:
    if token is None:
        return False
    if token.kind in ("ident", "string", "number"):
        return token.text != "in"
    return token.text in (")", "]", "}")


def analyse(tokens: list[Token]) -> Analysis:
    """Free roots, comprehension variables and sites, and plain paths of a parsed program."""
    result = Analysis()
    stack: list[_Frame] = []
    count = len(tokens)
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i > 0 else None
        nxt = tokens[i + 1] if i + 1 < count else None
        if tok.kind == "punct":
            if tok.text in "([{":
                frame = _Frame(tok.text, i)
                is_macro = (
                    tok.text == "("
                    and prev is not None
                    and prev.kind == "ident"
                    and prev.text in COMPREHENSIONS
                    and i >= 2
                    and tokens[i - 2].text == "."
                    and nxt is not None
                    and nxt.kind == "ident"
                    and i + 2 < count
                    and tokens[i + 2].text == ","
                )
                if is_macro:
                    assert prev is not None and nxt is not None
                    sites_open = [f.site for f in stack if f.site is not None]
                    frame.site = len(result.sites)
                    frame.binder = nxt.text
                    result.binders.add(nxt.text)
                    result.sites.append(Site(prev.text, sites_open[-1] if sites_open else None, nxt.text))
                    result.max_comprehension_nesting = max(result.max_comprehension_nesting, len(sites_open) + 1)
                stack.append(frame)
            elif tok.text in ")]}":
                if not stack:
                    raise ExpressionError(f"unbalanced {tok.text!r} at column {tok.start + 1}")
                frame = stack.pop()
                if frame.site is not None:
                    result.sites[frame.site].end = tok.start
                    if frame.commas == 1:
                        result.sites[frame.site].body_end = tok.start
            elif tok.text == "," and stack and stack[-1].site is not None:
                frame = stack[-1]
                frame.commas += 1
                site = result.sites[frame.site]  # type: ignore[index]
                if frame.commas == 1:
                    site.body_start = tok.end
                elif frame.commas == 2:
                    site.body_end = tok.start
                    site.transform_start = tok.end
            continue
        if tok.kind != "ident" or tok.text in KEYWORDS:
            continue
        if prev is not None and prev.text == "." and _ends_operand(tokens[i - 2] if i >= 2 else None):
            continue  # a field or a method name
        if nxt is not None and nxt.text == "(":
            continue  # a function call: checked against Program.functions()
        if stack and stack[-1].site is not None and stack[-1].index == i - 1:
            continue  # the variable a comprehension binds
        name = "." + tok.text if prev is not None and prev.text == "." else tok.text  # '.data': absolute
        if any(f.binder == name and f.commas >= 1 for f in stack):
            continue  # a comprehension variable in scope
        result.free.add(name)
        result.paths.add(_path_from(tokens, i))
    return result


def _path_from(tokens: list[Token], i: int) -> tuple[str, ...]:
    """The plain path starting at root token ``i``: ``data.a.b`` or ``data['a'].b``."""
    path = [tokens[i].text]
    j = i + 1
    while j < len(tokens):
        tok = tokens[j]
        if tok.text == "." and j + 1 < len(tokens) and tokens[j + 1].kind == "ident":
            if j + 2 < len(tokens) and tokens[j + 2].text == "(":
                break  # a method call
            path.append(tokens[j + 1].text)
            j += 2
        elif (
            tok.text == "["
            and j + 2 < len(tokens)
            and tokens[j + 1].kind == "string"
            and tokens[j + 2].text == "]"
            and tokens[j + 1].text[0] in "'\""
            and "\\" not in tokens[j + 1].text
            and not tokens[j + 1].text.startswith(("'''", '"""'))
        ):
            path.append(tokens[j + 1].text[1:-1])
            j += 3
        else:
            break
    return tuple(path)


def site_reads(tokens: list[Token], sites: list[Site]) -> list[SiteReads]:
    """Per comprehension site, the root paths and enclosing variables its arguments read.

    Nested comprehensions' arguments are left to their own site (they are metered per
    iteration of their own); their iteration source belongs to the enclosing body.
    """
    out: list[SiteReads] = []
    for number, site in enumerate(sites):
        nested = [(s.body_start, s.end) for k, s in enumerate(sites) if k != number and _inside(sites, k, number)]
        enclosing: dict[str, int] = {}
        chain: list[int] = []
        parent = site.parent
        while parent is not None:
            chain.append(parent)
            parent = sites[parent].parent
        for k in reversed(chain):  # the innermost binding of a name wins
            enclosing[sites[k].binder] = k
        paths: list[tuple[str, ...]] = []
        binders: list[int] = []
        for i, tok in enumerate(tokens):
            if tok.kind != "ident" or not site.body_start <= tok.start < site.end:
                continue
            if any(a <= tok.start < b for a, b in nested):
                continue
            prev = tokens[i - 1] if i > 0 else None
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if (prev is not None and prev.text == ".") or (nxt is not None and nxt.text == "("):
                continue  # a field, a method or a function
            if prev is not None and prev.text == "(" and i >= 2 and tokens[i - 2].text in COMPREHENSIONS:
                continue  # the variable a nested comprehension binds
            if tok.text in ROOTS:
                paths.append(_path_from(tokens, i))
            elif tok.text in enclosing and tok.text != site.binder:
                binders.append(enclosing[tok.text])
        out.append(SiteReads(tuple(paths), tuple(binders)))
    return out


def _inside(sites: list[Site], inner: int, outer: int) -> bool:
    parent = sites[inner].parent
    while parent is not None:
        if parent == outer:
            return True
        parent = sites[parent].parent
    return False


def instrument(source: str, sites: list[Site]) -> str:
    """``source`` with metering calls in every comprehension.

    Every body starts with ``__tf_step(site, variable)``; the value a ``map`` adds to its
    result passes through ``__tf_out(site, value)``, which measures it.
    """
    inserts: list[tuple[int, str]] = []
    for number, site in enumerate(sites):
        wraps_body = site.macro == "map" and site.transform_start < 0
        out_open = f"{OUT_FUNCTION}({number}, (" if wraps_body else ""
        inserts.append((site.body_start, f" {STEP_FUNCTION}({number}, {site.binder}) ? ({out_open}"))
        inserts.append((site.body_end, ("))" if wraps_body else "") + ") : null"))
        if site.macro == "map" and site.transform_start >= 0:
            inserts.append((site.transform_start, f" {OUT_FUNCTION}({number}, ("))
            inserts.append((site.end, "))"))
    out = []
    last = 0
    for pos, text in sorted(inserts, key=lambda item: item[0]):
        out.append(source[last:pos])
        out.append(text)
        last = pos
    out.append(source[last:])
    return "".join(out)


def quote(source: str, limit: int = 80) -> str:
    text = source if len(source) <= limit else source[: limit - 3] + "..."
    return repr(text)


def suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
