"""The fault-injection harness: a test-owned Redis, real worker nodes on it, an engine.

    with fault_lab(tmp_path, nodes={"faults": FleetSpec("faults", "prefork", 2)}) as lab:
        ids = lab.engine.start_many("chain", items, run="r")
        lab.kill_node("faults"); lab.start_node("faults")      # a whole node, kill -9
        lab.redis.restart()                                      # Redis kill -9, same AOF
        lab.wait_terminal(ids)
        figures = check_invariants(store_of(lab.engine), ids, "r")   # see invariants.py

Each node is its own ``celery worker`` process group (``engine.ops.fleet.Fleet``), so one node
is killed with everything it forked while the others run on. Beat is the node ``beat``.
The workers' clock is the wall clock plus the offset in ``lab.clock_file`` (see
``engine.clock.OffsetFileClock``); :meth:`FaultLab.advance_clock` moves it.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from engine.api import Engine
from engine.broker import CeleryEnqueuer
from engine.clock import OffsetFileClock, read_offset
from engine.definitions.validation import load_definition
from engine.instance import Instance
from engine.ops.fleet import Fleet, FleetSpec
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import store_of
from tests.faults.redis_server import RedisServer
from tests.integration.conftest import fleet_env, sender_app, stop_fleets

#: Finished instances keep this long (seconds) in the harness: long enough to inspect them.
RETENTION_SECONDS = 3600
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def default_nodes() -> dict[str, FleetSpec]:
    """The engine queue (threads: timers, sweeper) and the test service (prefork, 2 children)."""
    return {"engine": FleetSpec("engine", "threads", 2), "faults": FleetSpec("faults", "prefork", 2)}


@dataclass
class FaultLab:
    """A test-owned Redis, worker nodes on it, and an engine that starts and reads instances."""

    root: Path
    redis: RedisServer
    prefix: str
    env: dict[str, str]
    engine: Engine
    client: redis.Redis
    specs: dict[str, FleetSpec]
    nodes: dict[str, Fleet] = field(default_factory=dict)

    # -- nodes -------------------------------------------------------------------------------

    @property
    def logdir(self) -> Path:
        """Where every node writes its log (appended across restarts)."""
        return self.root / "logs"

    def start_node(self, name: str) -> Fleet:
        """Start node ``name`` (a key of ``specs``, or ``beat``)."""
        if name == "beat":
            fleet = Fleet([], beat=True, env=self.env, loglevel="INFO", logdir=self.logdir)
        else:
            fleet = Fleet([self.specs[name]], beat=False, env=self.env, loglevel="INFO", logdir=self.logdir)
        self.nodes[name] = fleet.__enter__()
        return fleet

    def node_pid(self, name: str) -> int:
        """The pid of node ``name``'s main process (the leader of its process group)."""
        return self.nodes[name].procs[0].pid

    def node_children(self, name: str) -> list[int]:
        """Pids of the processes node ``name`` forked (prefork pool children)."""
        try:
            return [p.pid for p in psutil.Process(self.node_pid(name)).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL node ``name``'s main process and every process it forked; returns their pids."""
        pids = [self.node_pid(name), *self.node_children(name)]
        fleet = self.nodes.pop(name)
        os.killpg(pids[0], signal.SIGKILL)
        for proc in fleet.procs:
            proc.wait(10)
        return pids

    def stop_nodes(self) -> None:
        """Warm shutdown of every node (SIGTERM, then SIGKILL after 15 s), the nodes side by side."""
        stop_fleets(self.nodes.values())
        self.nodes.clear()

    def logs(self, tail: int = 4000) -> str:
        """The end of every node's log, for failure messages."""
        logs = sorted(self.logdir.glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}" for p in logs)

    def log_text(self) -> str:
        """Every node's whole log."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob("*.log")))

    # -- the clock ---------------------------------------------------------------------------

    @property
    def clock_file(self) -> Path:
        """The offset file of every process of the lab (workers, beat and ``engine``)."""
        return self.root / "clock-offset"

    def advance_clock(self, seconds: float) -> None:
        """Move every process's clock ``seconds`` ahead (seen within a second)."""
        self.clock_file.write_text(repr(read_offset(self.clock_file) + seconds))

    def now(self) -> float:
        """The lab's current time."""
        return self.engine.clock()

    # -- instances ---------------------------------------------------------------------------

    def publish(self, body: dict[str, Any]) -> int:
        """Validate and publish a definition given as a dict."""
        return self.engine.publish(load_definition(json.dumps(body)))

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str | Callable[[], str]) -> None:
        """Poll ``check`` (Redis errors count as not yet) until true; fail with the logs after ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except REDIS_ERRORS:
                pass
            if time.monotonic() > end:
                said = what() if callable(what) else what
                raise AssertionError(f"timed out after {timeout}s waiting for {said}\n{self.logs()}")
            time.sleep(0.1)

    def wait_terminal(self, ids: list[str], timeout: float = 120.0) -> list[Instance]:
        """Wait until every instance in ``ids`` is terminal; returns them."""
        found: list[Instance] = []

        def done() -> bool:
            found[:] = store_of(self.engine).load_many(ids)
            return len(found) == len(ids) and all(i.status.is_terminal for i in found)

        def stuck() -> str:
            left = [(i.id, i.status.value, i.node, i.seq) for i in found if not i.status.is_terminal]
            return f"{len(ids)} instances terminal; {len(ids) - len(found)} missing, not terminal: {left[:8]}"

        self.wait_until(done, timeout, stuck)
        return found

    def calls(self) -> dict[str, int]:
        """How often each ``key:node`` was executed by the test services."""
        return {k.decode(): int(v) for k, v in self.client.hgetall(f"{self.prefix}:calls").items()}

    def busy(self) -> list[tuple[int, str, str]]:
        """(pid, key, node) of every announced execution, in order."""
        out = []
        for raw in self.client.lrange(f"{self.prefix}:busy", 0, -1):
            pid, key, node = raw.decode().split(":")
            out.append((int(pid), key, node))
        return out


def lab_env(root: Path, url: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of every node of a lab."""
    return {
        **fleet_env(url, prefix),
        "TRADEFLOW_SERVICE_MODULES": "tests.faults.services",
        "TRADEFLOW_MORNING_RUN": "0",
        "TRADEFLOW_HOME": str(root / "home"),  # never an embedded Redis of the user's
        "TRADEFLOW_RETENTION_DAYS": str(RETENTION_SECONDS / 86400),
        "TRADEFLOW_CLOCK_OFFSET_FILE": str(root / "clock-offset"),
        **extra,
    }


@contextmanager
def fault_lab(root: Path, nodes: dict[str, FleetSpec] | None = None, *, beat: bool = True,
              redis_server: RedisServer | None = None, env: dict[str, str] | None = None) -> Iterator[FaultLab]:
    """A started Redis (AOF, fsync always) and every node of ``nodes`` (default: engine + faults) plus beat."""
    server = redis_server or RedisServer(root)
    if not server.alive:
        server.start()
    prefix = f"tflab-{uuid.uuid4().hex[:8]}"
    specs = default_nodes() if nodes is None else nodes
    full_env = lab_env(root, server.url, prefix, **(env or {}))
    client = redis.Redis.from_url(server.url, socket_timeout=10, socket_connect_timeout=5)
    engine = Engine(RedisStore(client, Keys(prefix), retention_seconds=RETENTION_SECONDS),
                    CeleryEnqueuer(sender_app(server.url, prefix)), OffsetFileClock(root / "clock-offset"))
    lab = FaultLab(root, server, prefix, full_env, engine, client, specs)
    try:
        for name in specs:
            lab.start_node(name)
        if beat:
            lab.start_node("beat")
        yield lab
    finally:
        lab.stop_nodes()
        client.close()
        server.close()


def chain_definition(name: str, nodes: list[str], *, action: str = "work", timeout: float = 30,
                     max_attempts: int = 1) -> dict[str, Any]:
    """A linear workflow of ``faults.<action>`` steps, each given the instance's whole data."""
    body: dict[str, Any] = {"name": name, "initial_data": {"type": "object", "required": ["key"]},
                            "start": nodes[0], "nodes": {}}
    for i, node in enumerate(nodes):
        body["nodes"][node] = {
            "type": "service", "service": "faults", "action": action,
            "input": {"key": "data.key", "node": f"'{node}'", "data": "data"},
            "transitions": {"ok": nodes[i + 1] if i + 1 < len(nodes) else "done"},
            "timeout_seconds": timeout, "retry": {"max_attempts": max_attempts},
        }
    body["nodes"]["done"] = {"type": "terminal", "status": "succeeded"}
    return body
