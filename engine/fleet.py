"""Local worker fleets: one ``celery worker`` process per service queue, plus beat.

For development and the demo. In production run the same commands under your process
manager, as many machines per fleet as the load needs (see the README).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

CELERY = [sys.executable, "-m", "celery", "-A", "engine.worker"]


@dataclass(frozen=True)
class FleetSpec:
    """A fleet: the queue it serves, its pool and its concurrency."""

    queue: str
    pool: str = "threads"
    concurrency: int = 4

    @classmethod
    def parse(cls, text: str) -> FleetSpec:
        """``queue[:pool[:concurrency]]``, e.g. ``order_calc:prefork:2``."""
        parts = text.split(":")
        return cls(parts[0], parts[1] if len(parts) > 1 else "threads", int(parts[2]) if len(parts) > 2 else 4)

    def command(self, loglevel: str = "WARNING") -> list[str]:
        """The ``celery worker`` command line of this fleet."""
        return [*CELERY, "worker", "-Q", self.queue, "-P", self.pool, "-c", str(self.concurrency),
                "-n", f"{self.queue}@%h", "-l", loglevel, "--without-gossip", "--without-mingle"]

    def __str__(self) -> str:
        return f"{self.queue} ({self.pool} x{self.concurrency})"


def default_fleets() -> list[FleetSpec]:
    """The engine's own fleet plus every plugin's (``fleets`` hook)."""
    from engine.cli import _plugin_hooks

    specs = [FleetSpec("engine", "threads", 4)]
    for hook in _plugin_hooks("fleets"):
        specs.extend(hook())
    return specs


class Fleet:
    """Starts the fleets as child processes; stops them all on exit."""

    def __init__(self, specs: list[FleetSpec], beat: bool = True, env: dict[str, str] | None = None,
                 loglevel: str = "WARNING", logdir: Path | None = None) -> None:
        self.specs = specs
        self.beat = beat
        self.env = {**os.environ, **(env or {})}
        self.loglevel = loglevel
        self.logdir = logdir or Path(tempfile.mkdtemp(prefix="tradeflow-fleet-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Fleet:
        for spec in self.specs:
            self._spawn(spec.command(self.loglevel), f"worker-{spec.queue}")
        if self.beat:
            schedule = self.logdir / "celerybeat-schedule"
            self._spawn([*CELERY, "beat", "-s", str(schedule), "-l", self.loglevel], "beat")
        return self

    def _spawn(self, cmd: list[str], name: str) -> None:
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def wait(self) -> None:
        """Block until a child exits or Ctrl-C."""
        try:
            while all(p.poll() is None for p in self.procs):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL whatever is left."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
