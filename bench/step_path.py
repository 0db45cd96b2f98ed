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
Everything lives under a random key prefix on the given Redis and is deleted after.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from engine.app import build_engine, create_app
from engine.config import Settings
from engine.definitions.model import Definition
from engine.runtime.drain import IDLE_PAUSE_SECONDS
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


def measure(redis_url: str) -> dict[str, set[str]]:
    """File (relative to the repository) -> the functions of it one step called."""
    prefix = f"step-path-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=redis_url, redis_url_configured=True, key_prefix=prefix,
                        broker_prefix=f"{prefix}:q:", service_modules=("engine.samples.actions",), events=False)
    app = create_app(settings, redis_url=redis_url)
    engine = build_engine(settings)
    task = app.tasks["sample_io.fetch"]
    crossed: dict[str, set[str]] = {}

    def note(frame: FrameType, event: str, _arg: Any) -> None:
        if event != "call":
            return
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
    finally:
        delete_prefix(redis.Redis.from_url(redis_url), prefix)
    return crossed


def main(argv: list[str] | None = None) -> int:
    """Print the files one step crosses, with the functions called in each, and their count."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args(argv)
    crossed = measure(args.redis_url)
    engine_files = sorted(name for name in crossed if name.startswith("engine/") and "/samples/" not in name)
    for name in sorted(crossed):
        print(f"{name:36} {', '.join(sorted(crossed[name]))}")
    print(f"{len(engine_files)} files of engine/ (besides the action's own module), "
          "plus the Lua scripts they run: store/lua/state.lua (start, advance), runtime/lua/take.lua (the drain)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
