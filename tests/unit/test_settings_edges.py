"""Settings are built once at each edge and passed in: ``from_env(`` is called in the edge modules only.

The rule, checked on the source with ``ast`` (nothing is imported): in the shipped code
(``engine/``, ``console/``, ``portfolio_manager/``, ``order_calc/``, ``bench/`` and the
top-level modules), a call of any ``X.from_env(...)`` — ``Settings``, ``PMSettings``,
``ConsoleSettings`` or another — appears only in a module of :data:`EDGES`. Every other module
takes its settings as an argument. Tests are edges of their own and are not scanned.

Each edge must still call it: a module that stopped reading the environment leaves the list.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("engine", "console", "portfolio_manager", "order_calc", "bench")

#: Module -> why it may read the environment.
EDGES = {
    "engine/cli_context.py": "the CLI: each settings class read once per invocation, kept on click's context object",
    "portfolio_manager/cli.py": "the pm and accounts groups: PMSettings once per invocation, with the resolved Redis",
    "engine/worker.py": "the worker bootstrap: the app (and the plugins' worker hooks) built from one read",
    "portfolio_manager/plugin.py": "the plugin's hooks, each called once at an engine edge (Celery configuration, "
                                   "worker bootstrap, console app factory)",
    "celeryconfig.py": "a config module for Celery tools that load one by name; nothing in tradeflow imports it",
    "engine/ops/demo.py": "the engine's demo",
    "portfolio_manager/demo.py": "the trading demo",
    "bench/__main__.py": "the bench's entry",
}


def _files() -> list[Path]:
    found = [path for package in SCANNED for path in (ROOT / package).rglob("*.py")]
    return found + sorted(ROOT.glob("*.py"))


def _from_env_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_env"]


def test_from_env_is_called_at_the_edges_only() -> None:
    stray = [f"{path.relative_to(ROOT)}:{line}" for path in _files() for line in _from_env_calls(path)
             if str(path.relative_to(ROOT)) not in EDGES]
    assert not stray, ("settings read from the environment outside the edges (take them as an argument, built "
                       f"once at the edge, instead): {stray}")


def test_every_edge_still_reads_the_environment() -> None:
    assert [edge for edge in EDGES if not _from_env_calls(ROOT / edge)] == []
