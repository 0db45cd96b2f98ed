"""Who may send an await node's signals: every role named is declared, a quorum counts a signal of its node.

Read leniently from the raw JSON, like the graph and the expressions, so that every problem
of a file is reported in one pass. The declared role set is given by the caller (see
:mod:`engine.roles`); it is only asked for when the definition names a role.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from engine.definitions.nodes import escape_pointer
from engine.definitions.problems import did_you_mean
from engine.errors import Problem

#: Gives the declared role set (called at most once, when a definition names a role).
RoleSet = Callable[[], Iterable[str]]


def check_access(nodes: dict[str, Any], roles: RoleSet) -> list[Problem]:
    """Unknown roles in await nodes' signals, and a quorum counting a signal its node does not have."""
    problems: list[Problem] = []
    declared: list[frozenset[str]] = []  # the role set, once asked for

    def known() -> frozenset[str]:
        if not declared:
            declared.append(frozenset(roles()))
        return declared[0]

    for name, node in nodes.items():
        if not isinstance(node, dict) or node.get("type") != "await":
            continue
        base = f"/nodes/{escape_pointer(name)}"
        signals = node.get("signals") if isinstance(node.get("signals"), dict) else {}
        for signal, value in signals.items():
            if not isinstance(value, dict) or not isinstance(value.get("roles"), list):
                continue
            for index, role in enumerate(value["roles"]):
                if isinstance(role, str) and role not in known():
                    problems.append(Problem(f"{base}/signals/{escape_pointer(signal)}/roles/{index}",
                                            f"unknown role {role!r} ({_declared_text(known())})"))
        quorum = node.get("quorum")
        if isinstance(quorum, dict) and isinstance(quorum.get("signal"), str) and signals \
                and quorum["signal"] not in signals:
            problems.append(Problem(f"{base}/quorum/signal", f"unknown signal {quorum['signal']!r} of this node"
                                    f"{did_you_mean(quorum['signal'], signals)}"))
    return problems


def _declared_text(roles: frozenset[str]) -> str:
    if not roles:
        return "no role is declared: set TRADEFLOW_ROLES (a comma list) or install a plugin that declares roles"
    return f"declared: {', '.join(sorted(roles))}"
