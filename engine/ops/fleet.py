"""Local worker fleets: one ``celery worker`` process per service queue, plus beat.

For development and the demo. In production run the same commands under your process
manager, as many machines per fleet as the load needs (see the README).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from engine import plugins

CELERY = [sys.executable, "-m", "celery", "-A", "engine.worker"]
#: Signals that stop the fleet like Ctrl-C does, once :meth:`Fleet.wait` runs.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


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
    specs = [FleetSpec("engine", "threads", 4)]
    for hook in plugins.hooks("fleets"):
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
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stop_requested = threading.Event()
        self._saved_handlers: dict[int, Any] = {}

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
        """Block until a child exits, Ctrl-C, SIGTERM or SIGHUP; leaving the ``with`` block then stops all.

        SIGTERM and SIGHUP (a process manager stopping us, a closed terminal) are handled like
        Ctrl-C from here until the fleet is stopped, so no celery child is left running.
        """
        self._trap_signals()
        try:
            while not self._stop_requested.is_set() and all(p.poll() is None for p in self.procs):
                self._stop_requested.wait(0.5)
        except KeyboardInterrupt:
            pass

    def _trap_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers; Ctrl-C still works there
        for signum in STOP_SIGNALS:
            self._saved_handlers[signum] = signal.signal(signum, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_requested.set()

    def _restore_signals(self) -> None:
        for signum, handler in self._saved_handlers.items():
            signal.signal(signum, handler)
        self._saved_handlers.clear()

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL whatever is left of each child's process group."""
        for proc in self.procs:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
            _signal_group(proc.pid, signal.SIGKILL)  # stragglers: pool children that outlived their parent

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.stop()
        finally:
            self._restore_signals()


def _signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to a child's process group (its own session); gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
