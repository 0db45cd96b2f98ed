"""Loopback ports for the servers tests start, stop and start again on the same port.

``engine.ops.embedded.free_port`` asks the kernel for a port that is free *now*: fine for a
server started once at once, not for one killed and started again later (a Redis restart, a
rejoining primary). Between the kill and the restart the port is free, and another xdist worker
(or another test run on the machine) asking for a free port may be handed it; the "restarted"
server is then someone else's, or cannot bind. Even a port nobody asks for can be taken: an
outgoing connection's local port is drawn from the kernel's ephemeral range, where ``bind(0)``
picks from too.

:func:`reserve_port` closes both holes:

- the ports come from ``PORT_FIRST``..``PORT_LAST``, below the kernel's ephemeral range (no
  outgoing connection is ever given one), cut into one block per xdist worker
  (``PYTEST_XDIST_WORKER`` ``gw0``, ``gw1``...; a run without xdist uses the first block), so
  that two workers of one run do not even look at the same ports;
- a port is the test's while it holds an exclusive ``flock`` on ``<tmp>/tradeflow-test-ports/<port>.lock``
  (taken with ``LOCK_NB``, released by :meth:`PortLease.release`, or by the kernel when the
  process dies), so that two runs on one machine (both with a ``gw0``), or two leases in one
  process, never share a port;
- a locked port is handed out only if it can be bound and listened on right now (nothing else
  on the machine uses it, no connection of a former user lingers on it).

The lease is held for the server's whole life, kills and restarts included.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
import weakref
from pathlib import Path

#: The ports handed out: below Linux's default ephemeral range (32768-60999), above the usual
#: registered services' ports in use on developer machines.
PORT_FIRST = 20000
PORT_LAST = 32499
#: Ports in one xdist worker's block.
BLOCK_SIZE = 500
LOCK_DIR = Path(tempfile.gettempdir()) / "tradeflow-test-ports"


class PortLease:
    """A port reserved for this process until :meth:`release` (or until the lease is collected)."""

    def __init__(self, port: int, fd: int) -> None:
        self.port = port
        self._fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)

    @property
    def held(self) -> bool:
        """True until released."""
        return self._finalizer.alive

    def release(self) -> None:
        """Give the port back (idempotent); the server on it should be stopped by now."""
        self._finalizer()

    def __enter__(self) -> PortLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"PortLease({self.port}, held={self.held})"


def worker_index(worker: str | None = None) -> int:
    """The xdist worker's number (``gw3`` -> 3); 0 outside xdist or for an unexpected name."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    digits = name[2:] if name.startswith("gw") else ""
    return int(digits) if digits.isdigit() else 0


def _blocks() -> int:
    return (PORT_LAST - PORT_FIRST + 1) // BLOCK_SIZE


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of local ports for outgoing connections (Linux's default when unknown)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def candidate_ports(worker: str | None = None, rng: random.Random | None = None) -> list[int]:
    """Every port of the range, the worker's own block first (from a random point in it), then the others;
    ports of a machine's ephemeral range that overlaps ours go last."""
    rng = rng or random.Random()
    blocks = _blocks()
    own = worker_index(worker) % blocks
    order: list[int] = []
    for step in range(blocks):
        first = PORT_FIRST + ((own + step) % blocks) * BLOCK_SIZE
        start = rng.randrange(BLOCK_SIZE)
        order += [first + (start + i) % BLOCK_SIZE for i in range(BLOCK_SIZE)]
    low, high = ephemeral_range()
    return sorted(order, key=lambda port: low <= port <= high)  # stable: the order above stays within each part


def _lock(port: int) -> int | None:
    """The fd of ``port``'s lock file, locked exclusively; None if someone else holds it."""
    if not LOCK_DIR.is_dir():
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # shared like /tmp: every user's runs lock ports in it
            LOCK_DIR.chmod(0o1777)
    # Read-only is enough for flock, so another user's lock file serves as well as one's own.
    fd = os.open(LOCK_DIR / f"{port}.lock", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def bindable(port: int) -> bool:
    """True when a listening socket can be put on 127.0.0.1:``port`` now (without ``SO_REUSEADDR``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError:
            return False
    return True


def reserve_port(worker: str | None = None) -> PortLease:
    """A port of this worker's block (another block's when all of it is taken), locked and bindable now."""
    for port in candidate_ports(worker):
        fd = _lock(port)
        if fd is None:
            continue
        if bindable(port):
            return PortLease(port, fd)
        os.close(fd)
    raise RuntimeError(f"no port free in {PORT_FIRST}-{PORT_LAST} (locks in {LOCK_DIR})")


def reserve_ports(count: int, worker: str | None = None) -> list[PortLease]:
    """``count`` distinct leases (all released again if one cannot be had)."""
    leases: list[PortLease] = []
    try:
        for _ in range(count):
            leases.append(reserve_port(worker))
    except BaseException:
        for lease in leases:
            with contextlib.suppress(OSError):
                lease.release()
        raise
    return leases
