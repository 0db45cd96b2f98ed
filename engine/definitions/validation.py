"""Load and check workflow definitions: every problem, with its JSON pointer and a fix.

``load_definition`` parses a definition file and reports *all* its problems at once, each
with the RFC 6901 JSON pointer of the place and a message that suggests the fix::

    definitions/rebalance-us.json: /nodes/calc/transitions/ok: unknown node 'submitt' (did you mean 'submit'?)

Checks, in order, one module each:

- :mod:`~engine.definitions.json_text`: the JSON itself (syntax with line and column,
  duplicate keys, a top level that is an object, size and depth);
- :mod:`~engine.definitions.model_errors`: the structure (the strict pydantic models of
  :mod:`engine.definitions.nodes`), their errors translated to pointers and fixes;
- :mod:`~engine.definitions.graph`: every ``start``/transition/``next``/``default`` names a
  node, every node is reachable from ``start`` and can reach a terminal;
- :mod:`~engine.definitions.shadow`: every path from ``start`` to a node with an external
  effect (``"effect": "external"``) passes a shadow stop (``"shadow": "stop"``);
- :mod:`~engine.definitions.references`: every expression compiles, and a plain reference
  names a parameter, a node or an instance field;
- :mod:`~engine.definitions.access`: every role an await node's signals name is in the
  declared role set (:mod:`engine.roles`: ``TRADEFLOW_ROLES`` plus the plugins' roles), and a
  quorum counts one of its node's signals;
- :mod:`~engine.definitions.schema`: ``initial_data`` is a valid JSON Schema (and the format's
  own published schema).

``tradeflow definitions validate FILE...`` checks files; ``tradeflow definitions schema
--write definitions/schema.json`` publishes the format's JSON Schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.definitions.access import RoleSet, check_access
from engine.definitions.graph import check_graph
from engine.definitions.json_text import json_kind, parse
from engine.definitions.limit_check import check_limits
from engine.definitions.model_errors import model_problems
from engine.definitions.nodes import Definition
from engine.definitions.problems import did_you_mean, unique
from engine.definitions.references import check_expressions
from engine.definitions.schema import SCHEMA_ID, check_schema, json_schema, validate_input
from engine.definitions.shadow import check_shadow_stops
from engine.errors import DefinitionError, Problem
from engine.roles import declared_roles

#: A role set, a function giving one (asked only when a definition names a role), or None (the plugins').
Roles = Iterable[str] | Callable[[], Iterable[str]] | None

__all__ = ["SCHEMA_ID", "check_definition", "json_schema", "load_definition", "validate_file", "validate_input"]


def load_definition(text: str | bytes, source: str = "<definition>", *, roles: Roles = None) -> Definition:
    """Parse and check a definition; ``DefinitionError`` lists every problem found.

    ``roles``: the role set its signals may name, or a function giving it (called only when a
    definition names a role); the edges pass :func:`engine.roles.declared_roles` of their settings.
    None: the installed plugins' roles only.
    """
    document, problems = parse(text)
    if document is None and problems:
        raise DefinitionError(problems, source)
    if not isinstance(document, dict):
        kind = json_kind(document)
        raise DefinitionError([Problem("", f"a definition must be a JSON object {{...}}, got {kind}")], source)
    definition: Definition | None = None
    try:
        definition = Definition.model_validate_json(json.dumps(document), strict=True)
    except ValidationError as exc:
        problems.extend(model_problems(exc))
    problems.extend(_check_document(document, _role_set(roles)))
    if problems:
        raise DefinitionError(unique(problems), source)
    assert definition is not None
    return definition


def validate_file(path: str | Path, *, roles: Roles = None) -> Definition:
    """Load and check the definition file at ``path`` (problems name the file; ``roles`` as in ``load_definition``)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DefinitionError([Problem("", f"cannot read: {exc.strerror or exc}")], str(path)) from exc
    return load_definition(data, str(path), roles=roles)


def check_definition(definition: Definition, *, roles: Roles = None) -> list[Problem]:
    """Graph, expression, reference, role and schema problems of an already-built definition."""
    return unique(_check_document(definition.model_dump(mode="json"), _role_set(roles)))


def _role_set(roles: Roles) -> RoleSet:
    """The role set to check against: ``roles`` (or what it gives), else the plugins' (looked up only when needed)."""
    if roles is None:
        return declared_roles  # the plugins', asked only when a definition names a role
    if callable(roles):
        lookup = roles
        return lambda: frozenset(lookup())
    given = frozenset(roles)
    return lambda: given


def _check_document(document: dict[str, Any], roles: RoleSet) -> list[Problem]:
    nodes = document.get("nodes")
    if not isinstance(nodes, dict):
        return []
    problems = check_graph(document.get("start"), nodes)
    problems.extend(check_shadow_stops(document.get("start"), nodes))
    for field in ("drop_on_success", "drop_after_use"):
        dropped = document.get(field)
        if isinstance(dropped, list):
            problems.extend(
                Problem(f"/{field}/{i}", f"unknown node {name!r}{did_you_mean(name, nodes)}")
                for i, name in enumerate(dropped) if isinstance(name, str) and name not in nodes
            )
    parameters = document.get("parameters", {})
    problems.extend(check_expressions(nodes, parameters if isinstance(parameters, dict) else None))
    problems.extend(check_access(nodes, roles))
    problems.extend(check_limits(nodes))
    initial_data = document.get("initial_data")
    if isinstance(initial_data, dict):
        problems.extend(check_schema(initial_data))
    return problems
