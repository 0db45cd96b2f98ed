"""Which files of ``engine/`` one step crosses in a worker, measured (docs/architecture.md quotes it).

    .venv/bin/python -m bench.step_path [--redis-url redis://127.0.0.1:6379/14]

Runs, in this process, the Celery task of a service step the way a worker runs a delivered
message (``<service>.<action>``: start, input, action, transition, next message, the drain's
look at the queue), with a profiler that notes every function called from a file of the
repository. The first step of a two-service workflow is run once to warm the caches a running
worker has (the definition, compiled expressions), then, once the drain's pause after an empty
look is over (so it looks into the queue again, as in a busy worker), a second instance's step
is measured.
The next step belongs to another service, so it is sent, not run inline: the figure is one step.
The Lua scripts the step runs are measured too: every EVALSHA it sends is matched to the script
file it was loaded from (the first line of each ``engine/**/lua/*.lua``), with the operation name
for the scripts entered by one (``state.lua``).
Everything lives under a random key prefix on the given Redis and is deleted after.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from engine.app import build_engine, create_app
from engine.config import Settings
from engine.definitions.nodes import Definition
from engine.runtime.concerns.draining import IDLE_PAUSE_SECONDS
from engine.testing import delete_prefix

ROOT = Path(__file__).resolve().parents[1]

#: Two steps of two services (the samples), so the first one's next step goes through the broker.
DEFINITION = {
    "name": "step-path", "initial_data": {"type": "object"}, "start": "a",
    "nodes": {
        "a": {"type": "service", "service": "sample_io", "action": "fetch",
              "input": {"record_id": "data.record_id"}, "transitions": {"ok": "b", "missing": "b"}},
        "b": {"type": "service", "service": "sample_cpu", "action": "score",
              "input": {"values": "context.a.values"}, "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}


def lua_files() -> dict[str, str]:
    """First line of each Lua script of engine/ -> its path (relative to the repository)."""
    return {path.read_text().splitlines()[0]: str(path.relative_to(ROOT))
            for path in sorted((ROOT / "engine").rglob("*.lua"))}


def script_names(objects: list[Any]) -> dict[str, str]:
    """sha -> Lua file of every registered script held by ``objects`` (a store, an enqueuer)."""
    heads = lua_files()
    found = {}
    for obj in objects:
        for value in vars(obj).values():
            sha, source = getattr(value, "sha", None), getattr(value, "script", None)
            if isinstance(sha, str) and isinstance(source, (str, bytes)):
                first = (source.decode() if isinstance(source, bytes) else source).splitlines()[0]
                found[sha] = heads.get(first, "?")
    return found


def _operation(doc: Any) -> str:
    """The operation name of a script entered by one (``{"op": ...}``, state.lua); "" for others."""
    try:
        found = json.loads(doc)
    except (TypeError, ValueError):
        return ""
    return str(found.get("op", "")) if isinstance(found, dict) else ""


def measure(redis_url: str) -> dict[str, set[str]]:
    """File (relative to the repository) -> the functions of it one step called; a Lua file -> its operations."""
    prefix = f"step-path-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=redis_url, redis_url_configured=True, key_prefix=prefix,
                        broker_prefix=f"{prefix}:q:", service_modules=("engine.samples.actions",), events=False)
    app = create_app(settings, redis_url=redis_url)
    engine = build_engine(settings)
    task = app.tasks["sample_io.fetch"]
    crossed: dict[str, set[str]] = {}
    shas: list[tuple[str, str]] = []
    runtimes: list[Any] = []  # the runtime the task ran with (it holds the registered scripts)

    def note(frame: FrameType, event: str, _arg: Any) -> None:
        if event != "call":
            return
        if frame.f_code.co_name == "execute_command" and "redis" in frame.f_code.co_filename:
            command = frame.f_locals.get("args") or ()
            if command and str(command[0]).upper() == "EVALSHA":  # EVALSHA sha numkeys keys... op ...
                sha, numkeys, rest = str(command[1]), int(command[2]), command[3:]
                shas.append((sha, _operation(rest[numkeys] if len(rest) > numkeys else "")))
        if frame.f_code.co_name == "run_step" and not runtimes and hasattr(frame.f_locals.get("self"), "store"):
            runtimes.append(frame.f_locals["self"])
        path = Path(frame.f_code.co_filename).resolve()
        if path.is_relative_to(ROOT) and path.suffix == ".py":
            crossed.setdefault(str(path.relative_to(ROOT)), set()).add(frame.f_code.co_name)

    try:
        engine.publish(Definition.model_validate(DEFINITION), alias="production")
        task.run(engine.start("step-path", {"record_id": 1}), "a", 1, 1)  # warm up, as a running worker is
        measured = engine.start("step-path", {"record_id": 2})
        time.sleep(IDLE_PAUSE_SECONDS + 0.1)  # the drain looks into the queue again (take.lua)
        sys.setprofile(note)
        try:
            task.run(measured, "a", 1, 1)
        finally:
            sys.setprofile(None)
        names = script_names([part for runtime in runtimes for part in (runtime.store, runtime.enqueuer)])
        for sha, op in shas:
            name = names.get(sha, "?")
            crossed.setdefault(name, set()).update([op] if op else [])
    finally:
        delete_prefix(redis.Redis.from_url(redis_url), prefix)
    return crossed


def main(argv: list[str] | None = None) -> int:
    """Print the files one step crosses, with the functions called in each, and their count."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args(argv)
    crossed = measure(args.redis_url)
    engine_files = sorted(name for name in crossed
                          if name.startswith("engine/") and name.endswith(".py") and "/samples/" not in name)
    scripts = sorted(name for name in crossed if name.endswith(".lua") or name == "?")
    for name in sorted(crossed):
        print(f"{name:36} {', '.join(sorted(crossed[name]))}")
    print(f"{len(engine_files)} files of engine/ (besides the action's own module), "
          f"plus {len(scripts)} Lua scripts they run: {', '.join(scripts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
