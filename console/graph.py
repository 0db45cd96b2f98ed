"""A definition drawn as an SVG graph: nodes in layers from the start, the path taken and the
current node marked. Edges come from each node's own description (``NodeBase.edges``), so new
node types (``await`` with its signals and timeout) draw too."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from engine.definitions.nodes import Definition, NodeBase

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 150, 34, 30, 46, 10
#: Longest edge label drawn (a choice's condition or a wait's expression is cut, with an ellipsis).
LABEL_CHARS = 22


def edges(node: NodeBase) -> list[tuple[str, str]]:
    """(label, target) of every way out of a node."""
    out = []
    for edge in node.edges():
        label = edge.label if len(edge.label) <= LABEL_CHARS else edge.label[:LABEL_CHARS - 1] + "…"
        out.append((label, str(edge.target)))
    return out


def layers(definition: Definition) -> list[list[str]]:
    """Nodes by distance from the start (breadth first); unreachable ones last."""
    nodes = definition.nodes
    depth = {definition.start: 0}
    queue = [definition.start]
    while queue:
        name = queue.pop(0)
        for _, target in edges(nodes[name]):
            if target in nodes and target not in depth:
                depth[target] = depth[name] + 1
                queue.append(target)
    rest = max(depth.values(), default=0) + 1
    out: list[list[str]] = [[] for _ in range(rest + 1)]
    for name in nodes:
        out[depth.get(name, rest)].append(name)
    return [layer for layer in out if layer]


def definition_svg(definition: Definition, visited: Iterable[str] = (), current: str | None = None,
                   failed: str | None = None) -> str:
    """The graph; ``visited`` nodes and the edges between them are highlighted, ``current`` outlined."""
    seen = set(visited)
    grid = layers(definition)
    width = max(len(layer) for layer in grid) * (BOX_W + GAP_X) - GAP_X + 2 * MARGIN
    height = len(grid) * (BOX_H + GAP_Y) - GAP_Y + 2 * MARGIN
    where: dict[str, tuple[float, float]] = {}
    for row, layer in enumerate(grid):
        offset = (width - (len(layer) * (BOX_W + GAP_X) - GAP_X)) / 2
        for col, name in enumerate(layer):
            where[name] = (offset + col * (BOX_W + GAP_X), MARGIN + row * (BOX_H + GAP_Y))
    parts = [f'<svg class="graph" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
             'role="img" aria-label="workflow graph">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#8a94a6"/></marker></defs>']
    for name, node in definition.nodes.items():
        for label, target in edges(node):
            if target not in where:
                continue
            (x1, y1), (x2, y2) = where[name], where[target]
            taken = name in seen and target in seen
            if y1 == y2:  # same layer: side to side
                sx, sy = (x1 + BOX_W, y1 + BOX_H / 2) if x2 > x1 else (x1, y1 + BOX_H / 2)
                tx, ty = (x2, y2 + BOX_H / 2) if x2 > x1 else (x2 + BOX_W, y2 + BOX_H / 2)
            else:
                sx, sy = x1 + BOX_W / 2, (y1 + BOX_H if y2 > y1 else y1)
                tx, ty = x2 + BOX_W / 2, (y2 if y2 > y1 else y2 + BOX_H)
            colour = "#2563eb" if taken else "#b8c0cc"
            parts.append(f'<line x1="{sx:.0f}" y1="{sy:.0f}" x2="{tx:.0f}" y2="{ty:.0f}" stroke="{colour}" '
                         f'stroke-width="{2.5 if taken else 1.2}" marker-end="url(#arrow)"/>')
            if label:  # an edge going back up is labelled near its start, clear of the edges into its target
                share = 0.25 if y2 < y1 else 0.5
                parts.append(f'<text x="{sx + (tx - sx) * share + 4:.0f}" y="{sy + (ty - sy) * share:.0f}" '
                             f'class="edge">{escape(label)}</text>')
    for name, node in definition.nodes.items():
        x, y = where[name]
        kind = node.model_dump(mode="json").get("type", "")
        css = "node"
        if name in seen:
            css += " visited"
        if name == failed:
            css += " failed"
        elif name == current:
            css += " current"
        parts.append(f'<g class="{css}"><title>{escape(name)} ({escape(str(kind))})</title>'
                     f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="6"/>'
                     f'<text x="{x + BOX_W / 2:.0f}" y="{y + 15:.0f}" text-anchor="middle" class="name">'
                     f'{escape(name[:22])}</text><text x="{x + BOX_W / 2:.0f}" y="{y + 28:.0f}" '
                     f'text-anchor="middle" class="kind">{escape(str(kind))}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
