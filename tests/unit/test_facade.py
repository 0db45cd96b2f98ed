"""The engine's facade is closed.

The rules, checked on the source with ``ast`` (nothing is imported) and on an ``Engine``:

1. ``Engine`` has no public ``store``, ``runtime`` or ``enqueuer``, and no code asks for one:
   nowhere is ``.store``, ``.runtime`` or ``.enqueuer`` read off an object named ``engine``
   (``engine.store``, ``lab.engine.runtime``...) or off ``self`` in ``engine/api.py`` (code merged
   from older branches does exactly that, and fails only when it runs).
2. Its private ones (``_store``, ``_runtime``, ``_enqueuer``) are named as an attribute in two
   modules only: ``engine/api.py`` (the Engine) and ``engine/testing.py`` (``store_of``,
   ``runtime_of``, ``enqueuer_of``, ``Driver``: the one door tests use to the inside). No
   other module of the repository, inside ``engine/`` or out, may write ``x._store`` and so on.
3. Outside ``engine/``, no module imports ``engine.store`` or ``engine.runtime`` (any of their
   modules; at module level, inside a function or under ``TYPE_CHECKING`` alike), except the
   engine's white-box suites (:data:`WHITE_BOX`) and the bench's profilers of the engine's
   internals (:data:`PROFILERS`). The others use the Engine API, ``engine.testing`` (tests) and
   ``engine.ops.inspect.Inspector`` (the bench's read-only look at the stored bytes).
"""

from __future__ import annotations

import ast
from pathlib import Path

import fakeredis

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.testing import make_store

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = {"store", "runtime", "enqueuer"}
PRIVATE = {f"_{name}" for name in PUBLIC}
MAY_TOUCH_PRIVATE = {"engine/api.py", "engine/testing.py"}
INTERNAL = ("engine.store", "engine.runtime")
#: The engine's own white-box tests (they test the store and the runtime themselves).
WHITE_BOX = ("tests/unit/engine/", "tests/contract/", "tests/faults/")
#: Benchmarks that measure or profile the engine's internals by name.
PROFILERS = {"bench/profile_account.py", "bench/engine_overhead.py", "bench/replica_wait.py", "bench/step_path.py",
             "bench/housekeeping.py", "bench/capacity.py", "bench/state_script.py"}
SKIPPED_DIRS = {"node_modules", "site", "build"}


def _python_files() -> list[Path]:
    """Every Python file of the repository (hidden folders, virtualenvs and build output left out)."""
    found = sorted(ROOT.glob("*.py"))
    for top in sorted(ROOT.iterdir()):
        if top.is_dir() and not top.name.startswith(".") and top.name not in SKIPPED_DIRS:
            found += [path for path in top.rglob("*.py") if not SKIPPED_DIRS.intersection(path.parts)]
    return found


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def test_engine_has_no_public_store_runtime_or_enqueuer() -> None:
    engine = Engine(make_store(fakeredis.FakeRedis(), "facade"), MemoryEnqueuer())
    assert [name for name in ("store", "runtime", "enqueuer") if hasattr(engine, name)] == []


def _reads_a_public_inside(node: ast.AST, in_api: bool) -> bool:
    if not (isinstance(node, ast.Attribute) and node.attr in PUBLIC):
        return False
    owner = node.value
    named = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
    return named == "engine" or (in_api and named == "self")


def test_nothing_asks_an_engine_for_a_public_store_runtime_or_enqueuer() -> None:
    stray = [f"{_name(path)}:{node.lineno}: .{node.attr}" for path in _python_files()
             for node in ast.walk(ast.parse(path.read_text(), str(path)))
             if _reads_a_public_inside(node, _name(path) == "engine/api.py")]
    assert not stray, f"use the Engine API (or, in a test, engine.testing's store_of/runtime_of/enqueuer_of): {stray}"


def test_only_the_engine_and_engine_testing_touch_its_private_parts() -> None:
    stray = [f"{_name(path)}:{node.lineno}: .{node.attr}" for path in _python_files() if _name(path) not in
             MAY_TOUCH_PRIVATE for node in ast.walk(ast.parse(path.read_text(), str(path)))
             if isinstance(node, ast.Attribute) and node.attr in PRIVATE]
    assert not stray, f"use the Engine API (or, in a test, engine.testing's store_of/runtime_of/enqueuer_of): {stray}"


def test_outside_the_engine_nothing_imports_its_store_or_runtime() -> None:
    stray = []
    for path in _python_files():
        name = _name(path)
        if name.startswith(("engine/", *WHITE_BOX)) or name in PROFILERS:
            continue
        stray += [f"{name}:{line}: {module}" for line, module in _imported(ast.parse(path.read_text(), str(path)))
                  if module in INTERNAL or module.startswith(tuple(f"{m}." for m in INTERNAL))]
    assert not stray, ("outside engine/, go through the Engine API, engine.testing (tests) or "
                       f"engine.ops.inspect (the bench): {sorted(set(stray))}")
