"""Local worker fleets: ``celery worker`` processes on the service queues, plus beat.

By default (:func:`default_fleets`) one combined ``solo`` process per core, each consuming every
service's queue -- the layout the benchmarks measured cheapest in CPU per account (an account's whole
chain runs inline in one task, no prefork pipe) -- plus one more per two cores at a lower priority,
which takes the cores the others leave idle while they wait for Redis. :func:`service_fleets` is the split layout, one
fleet per service, for deployments whose services must scale apart (``--fleet`` options). In
production run the same commands under your process manager (see docs/workers.md).

While :meth:`Fleet.wait` runs, a node (or beat) that exits is started again after a backoff
that doubles with each exit in a row (1 s, 2 s, 4 s... at most 60 s; back to 1 s once a node
has run a minute), each exit and restart logged; the other nodes keep running meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
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

log = logging.getLogger(__name__)

CELERY = [sys.executable, "-m", "celery", "-A", "engine.worker"]
#: Signals that stop the fleet like Ctrl-C does, once :meth:`Fleet.wait` runs.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: Restart backoff of a node that exited: the first delay, the cap, and how long a node must
#: have run for its next exit to count as a first one again.
RESTART_FIRST_DELAY = 1.0
RESTART_MAX_DELAY = 60.0
RESTART_STABLE_AFTER = 60.0


def restart_delay(exits_in_a_row: int, first: float = RESTART_FIRST_DELAY, cap: float = RESTART_MAX_DELAY) -> float:
    """Seconds to wait before restarting a node that exited ``exits_in_a_row`` times (1, 2, ...)."""
    return float(min(cap, first * 2 ** max(0, exits_in_a_row - 1)))


@dataclass
class _Child:
    """One supervised process of the fleet: its command, log name and restart state."""

    name: str
    cmd: list[str]
    nice: int = 0
    started_at: float = 0.0
    exits_in_a_row: int = 0
    restart_at: float | None = None


@dataclass(frozen=True)
class FleetSpec:
    """A fleet: the queue it serves, its pool, its concurrency and its processes' niceness."""

    queue: str
    pool: str = "threads"
    concurrency: int = 4
    #: Added to the worker's niceness (0-19): a fleet at 10 takes the cores when the others leave them idle.
    nice: int = 0

    @classmethod
    def parse(cls, text: str) -> FleetSpec:
        """``queue[:pool[:concurrency[:nice]]]``, e.g. ``order_calc:prefork:2`` or ``engine:solo:1:10``."""
        parts = text.split(":")
        nice = int(parts[3]) if len(parts) > 3 else 0
        if not 0 <= nice <= 19:
            raise ValueError(f"{text}: NICE must be 0 (the normal priority) to 19 (the lowest), got {nice}")
        return cls(parts[0], parts[1] if len(parts) > 1 else "threads", int(parts[2]) if len(parts) > 2 else 4, nice)

    def command(self, loglevel: str = "WARNING", number: int = 1) -> list[str]:
        """The ``celery worker`` command line of this fleet (``number``: the how-manyeth fleet on
        these queues, for a node name of its own)."""
        return [*CELERY, "worker", "-Q", self.queue, "-P", self.pool, "-c", str(self.concurrency),
                "-n", f"{self.name(number)}@%h", "-l", loglevel, "--without-gossip", "--without-mingle"]

    @property
    def queues(self) -> list[str]:
        """The queues this fleet consumes (``queue`` may name several, comma-separated)."""
        return [q for q in self.queue.split(",") if q]

    def name(self, number: int = 1) -> str:
        """The node name of this fleet's worker: its queues, and ``-<number>`` from the second
        fleet on the same queues (one process per core: ``--fleet q:solo:1`` twice)."""
        base = self.queue.replace(",", "+")
        return base if number == 1 else f"{base}-{number}"

    def __str__(self) -> str:
        return f"{self.queue} ({self.pool} x{self.concurrency}" + (f", nice {self.nice})" if self.nice else ")")


def service_fleets() -> list[FleetSpec]:
    """The split layout: the engine's own fleet plus every plugin's (``fleets`` hook), one per service
    queue with the pool that suits it -- for services that must scale apart."""
    specs = [FleetSpec("engine", "threads", 4)]
    for hook in plugins.hooks("fleets"):
        specs.extend(hook())
    return specs


def all_queues(specs: list[FleetSpec] | None = None) -> list[str]:
    """Every queue ``specs`` consume (default: the service fleets'), each once, in order."""
    seen: dict[str, None] = {}
    for spec in service_fleets() if specs is None else specs:
        seen.update(dict.fromkeys(spec.queues))
    return list(seen)


#: The niceness added to a filler process: it gets a core when the others leave it idle.
FILLER_NICE = 10


def combined_fleets(processes: int | None = None, fillers: int | None = None) -> list[FleetSpec]:
    """``processes`` ``solo`` processes (default: one per core), each consuming every service's queue
    (an instance's steps of any service run inline in one task), then ``fillers`` more at
    :data:`FILLER_NICE` (default: one per two processes, at least one; see :func:`default_fleets`):
    what ``tradeflow workers --processes N --fillers M`` starts."""
    count = max(1, processes or os.cpu_count() or 1)
    extra = max(1, count // 2) if fillers is None else max(0, fillers)
    queues = ",".join(all_queues())
    return ([FleetSpec(queues, "solo", 1) for _ in range(count)]
            + [FleetSpec(queues, "solo", 1, FILLER_NICE) for _ in range(extra)])


def default_fleets() -> list[FleetSpec]:
    """What ``tradeflow workers`` and the demo start with no options: :func:`combined_fleets`, one
    process per core, plus one per two cores (at least one) at a lower priority (niceness
    :data:`FILLER_NICE`).

    A solo process is idle through each of its Redis round trips (about six per account); the
    fillers run then, and yield the cores whenever the others can use them. Measured on two
    cores (BENCHMARKS.md): a greedy morning 26 % faster, a MILP one unchanged.
    """
    return combined_fleets()


class Fleet:
    """Starts the fleets as child processes; stops them all on exit."""

    def __init__(self, specs: list[FleetSpec], beat: bool = True, env: dict[str, str] | None = None,
                 loglevel: str = "WARNING", logdir: Path | None = None, beat_schedule: Path | None = None) -> None:
        self.specs = specs
        self.beat = beat
        self.env = {**os.environ, **(env or {})}
        self.loglevel = loglevel
        self.logdir = logdir or Path(tempfile.mkdtemp(prefix="tradeflow-fleet-"))
        self.logdir.mkdir(parents=True, exist_ok=True)
        #: Beat's schedule state (``tradeflow workers``: under TRADEFLOW_HOME; default: the log directory).
        self.beat_schedule = beat_schedule or self.logdir / "celerybeat-schedule"
        self.procs: list[subprocess.Popen[bytes]] = []
        self._children: list[_Child] = []
        #: (name, exit status) of every exit seen by :meth:`wait`, in order.
        self.exits: list[tuple[str, int]] = []
        self._stop_requested = threading.Event()
        self._saved_handlers: dict[int, Any] = {}

    def __enter__(self) -> Fleet:
        seen: dict[str, int] = {}
        for spec in self.specs:
            seen[spec.queue] = number = seen.get(spec.queue, 0) + 1
            self._spawn(spec.command(self.loglevel, number),
                        f"worker-{spec.queue}" + (f"-{number}" if number > 1 else ""), spec.nice)
        if self.beat:
            self.beat_schedule.parent.mkdir(parents=True, exist_ok=True)
            self._spawn([*CELERY, "beat", "-s", str(self.beat_schedule), "-l", self.loglevel], "beat")
        return self

    def _spawn(self, cmd: list[str], name: str, nice: int = 0) -> None:
        self._children.append(_Child(name, cmd, nice))
        self.procs.append(self._popen(self._children[-1]))

    def _popen(self, child: _Child) -> subprocess.Popen[bytes]:
        child.started_at = time.monotonic()
        with open(self.logdir / f"{child.name}.log", "ab") as out:  # the child keeps its own copy
            proc = subprocess.Popen(child.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        if child.nice:
            with contextlib.suppress(ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, proc.pid, os.getpriority(os.PRIO_PROCESS, 0) + child.nice)
        return proc

    def wait(self) -> None:
        """Supervise the children until Ctrl-C, SIGTERM or SIGHUP; leaving the ``with`` block then stops all.

        A child that exits is restarted after :func:`restart_delay` (logged at WARNING with its
        exit status and log file); the others run on. SIGTERM and SIGHUP (a process manager
        stopping us, a closed terminal) are handled like Ctrl-C from here until the fleet is
        stopped, so no celery child is left running.
        """
        self._trap_signals()
        try:
            while not self._stop_requested.is_set():
                self.supervise_once()
                self._stop_requested.wait(0.5)
        except KeyboardInterrupt:
            pass

    def supervise_once(self) -> None:
        """Notice children that exited and restart those whose backoff has passed."""
        now = time.monotonic()
        for index, (child, proc) in enumerate(zip(self._children, self.procs, strict=True)):
            if child.restart_at is None:
                code = proc.poll()
                if code is None:
                    continue
                _signal_group(proc.pid, signal.SIGKILL)  # pool children that outlived their parent
                ran = now - child.started_at
                child.exits_in_a_row = 1 if ran >= RESTART_STABLE_AFTER else child.exits_in_a_row + 1
                delay = restart_delay(child.exits_in_a_row)
                child.restart_at = now + delay
                self.exits.append((child.name, code))
                log.warning("%s exited with status %s after %.0f s; restarting it in %.0f s (exit %d in a row; "
                            "see %s)", child.name, code, ran, delay, child.exits_in_a_row,
                            self.logdir / f"{child.name}.log")
            elif now >= child.restart_at:
                child.restart_at = None
                self.procs[index] = self._popen(child)
                log.warning("%s restarted (pid %d)", child.name, self.procs[index].pid)

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
