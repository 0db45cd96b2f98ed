"""Real worker fleets on the shared test Redis, under a key and broker prefix of their own.

For the fault scenarios that kill workers, misbehave in services or send hostile messages,
but never kill Redis itself (those use the harness's own redis-server). Every key under the
prefix is deleted afterwards; nothing else is touched.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis

from engine.api import Engine, RunProgress
from engine.broker import CeleryEnqueuer
from engine.ops.fleet import Fleet, FleetSpec
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import delete_prefix
from tests.integration.conftest import fleet_env, sender_app, stop_fleets


@dataclass
class SharedFleet:
    """Fleets started for one test module, an engine that talks to them, and their environment."""

    engine: Engine
    client: redis.Redis
    prefix: str
    env: dict[str, str]
    fleets: list[Fleet] = field(default_factory=list)

    def spawn(self, specs: list[FleetSpec], beat: bool = False) -> Fleet:
        """Start one more fleet (a replacement after a kill, or a second queue)."""
        fleet = Fleet(specs, beat=beat, env=self.env, loglevel="INFO").__enter__()
        self.fleets.append(fleet)
        return fleet

    def logs(self, tail: int = 2500) -> str:
        """The end of every worker log, for assertion messages."""
        return "\n".join(p.read_text(errors="replace")[-tail:] for f in self.fleets for p in f.logdir.glob("*.log"))

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``check`` until true; fail with the workers' logs after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while not check():
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")
            time.sleep(0.05)

    def wait_run(self, run: str, timeout: float = 90.0) -> RunProgress:
        """Wait until every instance of ``run`` is terminal."""
        self.wait_until(lambda: self.engine.progress(run).done, timeout, f"run {run}: {self.engine.progress(run)}")
        return self.engine.progress(run)


@contextmanager
def shared_fleet(redis_url: str, modules: str, specs: list[FleetSpec], *, name: str,
                 extra_env: dict[str, Any] | None = None) -> Iterator[SharedFleet]:
    """Fleets serving ``specs`` (plus beat) with the actions of ``modules`` loaded."""
    prefix = f"tffault-{name}-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    env = {**fleet_env(redis_url, prefix), "TRADEFLOW_SERVICE_MODULES": modules, "TRADEFLOW_MORNING_RUN": "0",
           **{k: str(v) for k, v in (extra_env or {}).items()}}
    engine = Engine(RedisStore(client, Keys(prefix), retention_seconds=600),
                    CeleryEnqueuer(sender_app(redis_url, prefix)))
    live = SharedFleet(engine, client, prefix, env)
    try:
        live.spawn(specs, beat=True)
        yield live
    finally:
        stop_fleets(live.fleets)
        delete_prefix(client, prefix)
        client.close()
