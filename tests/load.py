"""Busy-loop processes that hold the machine's cores: for tests of outcomes under load.

``busy_cores()`` starts one process per core (``os.cpu_count()``) that spins in a Python loop,
and always kills them on exit. ``make test-under-load`` (``python -m tests.under_load``) runs
the suite inside it; a test uses it to solve or evaluate the same input on a busy machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_SPIN = "while True: pass"


def start_busy_loops(count: int | None = None) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` (default: one per core) spinning processes, each in a session of its own."""
    n = count if count is not None else (os.cpu_count() or 2)
    return [subprocess.Popen([sys.executable, "-c", _SPIN], start_new_session=True) for _ in range(n)]


def stop_busy_loops(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill the spinning processes started by :func:`start_busy_loops` and reap them."""
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait()


@contextmanager
def busy_cores(count: int | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Hold ``count`` cores (default: all) busy for the duration of the block."""
    procs = start_busy_loops(count)
    try:
        yield procs
    finally:
        stop_busy_loops(procs)
