"""A Mermaid ``stateDiagram-v2`` drawn from a definition.

Service and http nodes show what they call; transitions are labelled with their names,
choice branches with their condition (and ``default``), wait edges with the time they wait
for; terminal nodes lead to ``[*]``, failed ones drawn in red. Paste the output into any
Mermaid renderer (GitHub renders ```mermaid blocks).
"""

from __future__ import annotations

import re

from engine.definitions.nodes import Definition, TerminalNode, TerminalStatus

__all__ = ["to_mermaid"]

MAX_LABEL = 60
_SAFE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESERVED = frozenset({"state", "note", "end", "direction", "class", "classDef", "style", "as", "left", "right"})
_ENTITIES = {"#": "#35;", ";": "#59;", ":": "#58;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "{": "#123;", "}": "#125;"}


def to_mermaid(definition: Definition) -> str:
    """The definition as Mermaid ``stateDiagram-v2`` text (one line per state or edge)."""
    ids = _ids(list(definition.nodes))
    lines = ["stateDiagram-v2"]
    for name, node in definition.nodes.items():
        sid = ids[name]
        if sid != name:
            lines.append(f'    state "{_label(name)}" as {sid}')
        label = node.label()
        if node.diagram_shape:
            lines.append(f"    state {sid} <<{node.diagram_shape}>>")
        elif label:
            lines.append(f"    {sid} : {_label(label)}")
    lines.append(f"    [*] --> {ids[definition.start]}")
    for name, node in definition.nodes.items():
        sid = ids[name]
        lines.extend(f"    {sid} --> {ids[edge.target]} : {_label(edge.label)}" for edge in node.edges())
        if node.ends:
            lines.append(f"    {sid} --> [*]")
    failed = [
        ids[name]
        for name, node in definition.nodes.items()
        if isinstance(node, TerminalNode) and node.status == TerminalStatus.FAILED
    ]
    if failed:
        lines.append("    classDef failed fill:#fdd,stroke:#c00")
        lines.append(f"    class {','.join(failed)} failed")
    return "\n".join(lines) + "\n"


def _ids(names: list[str]) -> dict[str, str]:
    """A Mermaid-safe state id per node name (the name itself when it is safe)."""
    ids: dict[str, str] = {}
    taken = {n for n in names if _SAFE_ID.match(n) and n not in _RESERVED}
    for name in names:
        if name in taken:
            ids[name] = name
            continue
        base = "n_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
        candidate, counter = base, 1
        while candidate in taken:
            counter += 1
            candidate = f"{base}_{counter}"
        taken.add(candidate)
        ids[name] = candidate
    return ids


def _label(text: str) -> str:
    """``text`` on one line, shortened, with Mermaid's special characters as entities."""
    text = " ".join(text.split())
    if len(text) > MAX_LABEL:
        text = text[: MAX_LABEL - 1] + "…"
    return "".join(_ENTITIES.get(ch, ch) for ch in text)
