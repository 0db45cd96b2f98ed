"""The test servers' port allocator (tests/ports.py): leases held never collide, released ones come back.

The block of ``gw23`` is used here: a test run on two or four xdist workers never looks at it first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests import ports
from tests.ports import PORT_FIRST, PORT_LAST, reserve_port, reserve_ports

ROOT = Path(__file__).resolve().parents[2]
WORKER = "gw23"

#: Holds ``count`` leases of worker ``gw23`` in another process until its stdin closes.
HOLDER = """
import sys
from tests.ports import reserve_ports
leases = reserve_ports(int(sys.argv[1]), "gw23")
print(" ".join(str(lease.port) for lease in leases), flush=True)
sys.stdin.read()
"""


def _holder(count: int) -> tuple[subprocess.Popen[str], set[int]]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(count)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip(), f"the holder printed nothing (exit {proc.poll()})"
    return proc, {int(p) for p in line.split()}


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


def test_leases_held_in_one_process_never_share_a_port() -> None:
    leases = reserve_ports(60, WORKER)
    try:
        found = [lease.port for lease in leases]
        assert len(set(found)) == 60
        assert all(PORT_FIRST <= port <= PORT_LAST for port in found)
    finally:
        for lease in leases:
            lease.release()


def test_leases_held_by_two_processes_of_the_same_worker_name_never_share_a_port() -> None:
    proc, theirs = _holder(40)
    try:
        mine = reserve_ports(40, WORKER)
        try:
            assert len(theirs) == 40
            assert theirs.isdisjoint({lease.port for lease in mine})
        finally:
            for lease in mine:
                lease.release()
    finally:
        _stop(proc)


def test_a_released_port_is_handed_out_again(monkeypatch: pytest.MonkeyPatch) -> None:
    lease = reserve_port(WORKER)
    port = lease.port
    monkeypatch.setattr(ports, "candidate_ports", lambda worker=None, rng=None: [port])
    with pytest.raises(RuntimeError, match="no port free"):
        reserve_port(WORKER)  # held: not handed out, even though nothing listens on it
    lease.release()
    assert not lease.held
    lease.release()  # idempotent
    again = reserve_port(WORKER)
    try:
        assert again.port == port
    finally:
        again.release()


def test_the_port_of_a_killed_holder_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    proc, theirs = _holder(1)
    (port,) = theirs
    monkeypatch.setattr(ports, "candidate_ports", lambda worker=None, rng=None: [port])
    try:
        with pytest.raises(RuntimeError):
            reserve_port(WORKER)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        _stop(proc)
    with reserve_port(WORKER) as lease:  # the kernel dropped the dead process's lock
        assert lease.port == port


def test_a_port_something_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with reserve_port(WORKER) as first, reserve_port(WORKER) as second:
        busy, spare = first.port, second.port
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", busy))  # someone outside the allocator, no lock file taken
        listener.listen(1)
        monkeypatch.setattr(ports, "candidate_ports", lambda worker=None, rng=None: [busy, spare])
        with reserve_port(WORKER) as lease:
            assert lease.port == spare


def test_workers_start_in_blocks_of_their_own_below_the_ephemeral_range() -> None:
    gw0, gw1 = ports.candidate_ports("gw0"), ports.candidate_ports("gw1")
    own0, own1 = set(gw0[: ports.BLOCK_SIZE]), set(gw1[: ports.BLOCK_SIZE])
    assert own0.isdisjoint(own1)
    assert sorted(gw0) == sorted(gw1) == list(range(PORT_FIRST, PORT_FIRST + ports.BLOCK_SIZE * ports._blocks()))
    low, _high = ports.ephemeral_range()
    if low > PORT_LAST:  # Linux's default range: no outgoing connection is given one of these ports
        assert all(port < low for port in gw0)
    assert ports.worker_index("gw7") == 7 and ports.worker_index("master") == 0 and ports.worker_index("") == 0
