"""Mermaid diagrams drawn from definitions."""

from __future__ import annotations

import json
from pathlib import Path

from engine.definitions.diagram import to_mermaid
from engine.definitions.validation import load_definition, validate_file

HERE = Path(__file__).parent

SMALL = {
    "name": "small",
    "start": "pause",
    "nodes": {
        "pause": {"type": "wait", "until": "now() + duration('30m')", "next": "fetch"},
        "fetch": {
            "type": "service",
            "service": "book",
            "action": "fetch",
            "transitions": {"ok": "pick", "closed": "gone"},
        },
        "pick": {
            "type": "choice",
            "choices": [{"when": "size(context.fetch) > 0", "next": "call-out"}],
            "default": "done",
        },
        "call-out": {"type": "http", "url": "https://svc.example.com/x", "transitions": {"ok": "end"}},
        "end": {"type": "terminal", "status": "succeeded"},
        "done": {"type": "terminal", "status": "succeeded"},
        "gone": {"type": "terminal", "status": "failed"},
    },
}


def test_small_definition() -> None:
    assert to_mermaid(load_definition(json.dumps(SMALL))) == (
        "stateDiagram-v2\n"
        "    fetch : book.fetch\n"
        "    state pick <<choice>>\n"
        '    state "call-out" as n_call_out\n'
        "    n_call_out : POST https#58;//svc.example.com/x\n"
        '    state "end" as n_end\n'
        "    [*] --> pause\n"
        "    pause --> fetch : until now() + duration('30m')\n"
        "    fetch --> pick : ok\n"
        "    fetch --> gone : closed\n"
        "    pick --> n_call_out : size(context.fetch) #gt; 0\n"
        "    pick --> done : default\n"
        "    n_call_out --> n_end : ok\n"
        "    n_end --> [*]\n"
        "    done --> [*]\n"
        "    gone --> [*]\n"
        "    classDef failed fill:#fdd,stroke:#c00\n"
        "    class gone failed\n"
    )


def test_every_node_and_edge_appears() -> None:
    definition = validate_file(HERE / "definitions" / "good" / "every-node-type.json")
    text = to_mermaid(definition)
    assert text.startswith("stateDiagram-v2\n    ")
    assert "[*] --> at_nine" in text
    assert "at_nine --> fetch : until at(data.day, '09#58;30', params.zone)" in text
    assert "is_high --> later : context.score.score #gt;= params.threshold" in text
    assert "class not_found failed" in text
    edges = [line for line in text.splitlines() if "-->" in line]
    assert len(edges) == 1 + 1 + 2 + 1 + 3 + 1 + 2  # start, wait, http, service, choice, wait, terminals


def test_long_and_special_labels_are_shortened_and_escaped() -> None:
    body = dict(SMALL, nodes=dict(SMALL["nodes"]))
    body["nodes"]["pause"] = dict(body["nodes"]["pause"], until="now() + duration('30m') // " + "x; #" * 40)
    text = to_mermaid(load_definition(json.dumps(body)))
    label = next(line for line in text.splitlines() if line.startswith("    pause -->")).split(" : ", 1)[1]
    assert label.endswith("…") and ";" not in label.replace("#59;", "").replace("#35;", "").replace("#58;", "")
